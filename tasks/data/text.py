"""Plain text for masked language modelling (transformers' run_mlm.py): reading, tokenising, grouping.

A text file (UTF-8, optionally gzipped, any line ends) is read line by line; blank lines are dropped (a
general-distillation corpus, `read_corpus`, refuses them).
`--line-by-line`: each line is one example, truncated to the sequence length and padded. Otherwise, as
run_mlm.py's group_texts: every line is tokenised with its special tokens, the lines are concatenated and
cut into blocks of exactly the sequence length, the remainder dropped.

Besides the model inputs, the features hold `maskable` (not a special token, not padding) and, for
whole-word masking, `word_starts` (tasks/data/masking.py draws the masks from them).

`python -m tasks.data.text squad-contexts SQUAD.json[.gz] OUT.txt [--limit N]` writes the paragraphs of a
SQuAD file one per line (each paragraph once, in file order): real English text to train on.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from tasks.data.files import DataError, parse_json, read_text, require, text_lines
from tasks.data.masking import word_starts

TOKEN_FEATURES = ("input_ids", "token_type_ids", "attention_mask")


def read_lines(path) -> list[str]:
    """The file's non-blank lines, stripped of surrounding whitespace; DataError when there are none."""
    lines = [line.strip() for line in text_lines(read_text(path))]
    lines = [line for line in lines if line]
    if not lines:
        raise DataError(path, None, "holds no text lines (empty, or blank lines only)")
    return lines


def read_corpus(path) -> list[str]:
    """A general-distillation corpus (TinyBERT's seed format: one sentence or paragraph per line), stripped of
    surrounding whitespace; DataError naming the line of an empty (or blank) line, or the file when it holds no
    line at all."""
    lines = [line.strip() for line in text_lines(read_text(path))]
    if not lines:
        raise DataError(path, None, "holds no text lines (an empty corpus)")
    for number, line in enumerate(lines, 1):
        if not line:
            raise DataError(path, number, "empty line: the corpus holds one sentence or paragraph per line")
    return lines


def text_features(lines, tokenizer, max_seq_length: int, line_by_line: bool, whole_word: bool, path,
                  inputs=None) -> dict[str, np.ndarray]:
    """int64 model inputs [rows, max_seq_length] (named as the model's `inputs` declare them, default input_ids,
    token_type_ids, attention_mask), bool `maskable` and, when `whole_word`, bool `word_starts`."""
    if line_by_line:
        encoded = tokenizer(list(lines), truncation=True, max_length=max_seq_length, padding="max_length",
                            return_token_type_ids=True, return_attention_mask=True, return_special_tokens_mask=True,
                            return_offsets_mapping=True)
        arrays = {name: np.asarray(encoded[name], dtype=np.int64) for name in (*TOKEN_FEATURES, "special_tokens_mask")}
        offsets = np.asarray(encoded["offset_mapping"], dtype=np.int64).reshape(len(lines), max_seq_length, 2)
    else:
        arrays, offsets = grouped_blocks(lines, tokenizer, max_seq_length, path)
    # special tokens the tokenizer added, padding, and special tokens written in the text ([UNK] too): as
    # DataCollatorForLanguageModeling's get_special_tokens_mask(already_has_special_tokens=True)
    maskable = (arrays.pop("special_tokens_mask") == 0) & (arrays["attention_mask"] == 1) & ~np.isin(
        arrays["input_ids"], tokenizer.all_special_ids)
    if not maskable.any():
        raise DataError(path, None, "holds no token that can be masked (only special tokens)")
    features = {"maskable": maskable}
    if whole_word:
        features["word_starts"] = word_starts(offsets, maskable)
    names = {"input_ids": "input_ids", "token_type_ids": "token_type_ids", "attention_mask": "attention_mask"}
    if inputs is not None:
        apart = [spec.name for spec in inputs if spec.text != "joint"]
        if apart:
            raise ValueError(f"the model reads two texts apart ({', '.join(apart)}); masked-LM text is one text")
        names = {spec.name: spec.feature for spec in inputs}
    for name, feature in names.items():
        features[name] = arrays[feature]
    return features


def grouped_blocks(lines, tokenizer, block: int, path) -> tuple[dict, np.ndarray]:
    """run_mlm.py's group_texts: each line tokenised with its special tokens, all concatenated, cut into
    blocks of `block` tokens, the remainder dropped."""
    encoded = tokenizer(list(lines), return_token_type_ids=True, return_attention_mask=True,
                        return_special_tokens_mask=True, return_offsets_mapping=True, verbose=False)
    names = (*TOKEN_FEATURES, "special_tokens_mask")
    joined = {name: np.fromiter((v for row in encoded[name] for v in row), dtype=np.int64) for name in names}
    offsets = np.asarray([pair for row in encoded["offset_mapping"] for pair in row], dtype=np.int64).reshape(-1, 2)
    total = len(joined["input_ids"])
    rows = total // block
    if rows == 0:
        raise DataError(path, None, f"its {total} tokens make no block of {block} (--max-seq-length); give a "
                                    "smaller length or --line-by-line")
    arrays = {name: values[:rows * block].reshape(rows, block) for name, values in joined.items()}
    return arrays, offsets[:rows * block].reshape(rows, block, 2)


# ---- python -m tasks.data.text squad-contexts ---------------------------------------------------------


def squad_contexts(path) -> list[str]:
    """The paragraphs (contexts) of a SQuAD JSON file in file order, each once, each on one line."""
    data = parse_json(path, read_text(path))
    require(data, dict, path, "", "the file")
    articles = require(data.get("data"), list, path, "data", "data")
    seen, contexts = set(), []
    for a, article in enumerate(articles):
        where = f"data[{a}]"
        for p, paragraph in enumerate(require(require(article, dict, path, where, "an article").get("paragraphs"),
                                              list, path, where, "paragraphs", "paragraphs")):
            record = require(paragraph, dict, path, f"{where}.paragraphs[{p}]", "a paragraph")
            context = require(record.get("context"), str, path, f"{where}.paragraphs[{p}]", "context", "context")
            line = " ".join(context.split())  # line breaks inside a paragraph would split it
            if line and line not in seen:
                seen.add(line)
                contexts.append(line)
    if not contexts:
        raise DataError(path, None, "holds no paragraph text (data[*].paragraphs[*].context)")
    return contexts


def write_lines(path, lines) -> None:
    """Write the lines to `path` through a temporary sibling: an interrupted run leaves no half file."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        partial.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        os.replace(partial, path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise DataError(path, None, f"cannot be written ({exc.strerror or exc})") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


class Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv=None) -> int:
    parser = Parser(prog="python -m tasks.data.text", description="Text files for masked language modelling.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    contexts = sub.add_parser("squad-contexts", help="write a SQuAD file's paragraphs one per line",
                              description="Write the paragraphs (contexts) of a SQuAD v1.1/v2.0 JSON file, gzipped "
                                          "or not, one per line, each once, in file order.")
    contexts.add_argument("source", help="SQuAD JSON file (.json or .json.gz)")
    contexts.add_argument("destination", help="text file to write (replaced if it exists)")
    contexts.add_argument("--limit", type=int, help="write only the first N paragraphs")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code
    if args.limit is not None and args.limit < 1:
        print(f"{parser.prog} {args.command}: error: --limit must be positive", file=sys.stderr)
        return 2
    source, destination = Path(args.source), Path(args.destination)
    try:
        if not source.exists():
            raise DataError(source, None, "not found")
        if destination.is_dir():
            raise DataError(destination, None, "is a folder; give a file to write")
        lines = squad_contexts(source)[:args.limit]
        write_lines(destination, lines)
    except DataError as exc:
        print(f"{parser.prog} {args.command}: error: {exc}", file=sys.stderr)
        return 2
    print(f"{destination}: {len(lines)} paragraphs, {sum(len(line.split()) for line in lines)} words")
    return 0


if __name__ == "__main__":
    sys.exit(main())
