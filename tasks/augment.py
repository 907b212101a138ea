"""`python -m tasks augment`: a GLUE task's augmented transfer set and its teacher's logits, written once.

OUT/train.tsv holds the task's rows in its own TSV layout (its text columns and label column, by name): the
original rows first, as read, then each example's augmented rows (tasks/data/augment.py: Tang et al. 2019 or
TinyBERT), a row equal to any earlier one dropped; an augmented row keeps its example's label. Beside it,
OUT/train.tsv.teacher-logits.safetensors holds the teacher's logits of every row (`logits` [rows, labels], in
the teacher's dtype), with the file's sha256, the teacher's parameter digest and the options in its metadata:
`tasks distill --train-file OUT/train.tsv` reads them instead of running the teacher, in any backend.

The work is streamed in chunks of examples of fixed size (the teacher's batches depend on the data alone), each
appended to OUT/.augment-work/ and committed (state.json) once written; the same command after an interruption
continues from the last committed chunk and writes the same bytes as a run without one. The final files appear
under their names only when complete.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from backends import family
from backends.tensorfile import write_safetensors
from tasks.data.augment import (LOGITS_TENSOR, METHODS, POS_RULE_NOTE, eligible, example_rng, example_texts,
                                file_digest, keep_new, logits_path, nearest_words, params_digest, tang_samples,
                                text_samples, tinybert_samples, top_candidates, whole_word_tokens)
from tasks.data.features import PairExample, load_tokenizer
from tasks.data.glue import glue_features, read_glue_file

from tasks.train import runner_class
from tasks.train.job import check_output_dir, few, log
from tasks.train.loop import predict_all
from tasks.train.model import CONFIG_FILE, check_teacher_task, family_of, load_model
from tasks.train.task import GlueTask, Options, TaskError, make_task

TRAIN_FILE = "train.tsv"
WORK_DIR = ".augment-work"
STATE_FILE = "state.json"
ROWS_FILE = "rows.tsv"
LOGITS_FILE = "logits.bin"
ORIGINAL_CHUNK = 256  # original rows per committed chunk
AUGMENT_CHUNK = 16  # examples per committed chunk of augmented rows
MLM_HEAD = "mlm"


class AugmentJob:
    """One `tasks augment` invocation: every check in __init__ (before a framework loads), the work in run()."""

    def __init__(self, args):
        self.args = a = args
        for option in ("n_iter", "max_train_samples", "max_seq_length", "batch_size"):
            if getattr(a, option) is not None and getattr(a, option) < 1:
                raise TaskError(f"--{option.replace('_', '-')} must be positive")
        self.rules = replace(METHODS[a.method], samples=a.n_iter)
        self.task = make_task(a.task, a.data_dir, {"train": a.train_file},
                              Options(max_seq_length=a.max_seq_length))
        if not isinstance(self.task, GlueTask):
            raise TaskError(f"--task {a.task}: augment writes GLUE transfer sets (a TSV of texts and labels)")
        self.source = self.task.path("train")
        self.output_dir = Path(a.output_dir)
        check_output_dir(self.output_dir)
        self.train_file = self.output_dir / TRAIN_FILE
        self.logits_file = logits_path(self.train_file)
        existing = [str(p) for p in (self.train_file, self.logits_file) if p.exists()]
        if existing and not a.overwrite_output_dir:
            raise TaskError(f"{' and '.join(existing)} already exist; use --overwrite-output-dir to replace them")
        self.examples = read_glue_file(self.source, self.task.glue)[:a.max_train_samples]
        if any(example.label is None for example in self.examples):
            raise TaskError(f"{self.source}: the train split has no labels (a test file?)")
        self.teacher = load_model(a.teacher, self.task.head, self.task.num_labels, seed=a.seed)
        if self.teacher.folder is None or self.teacher.fresh:
            raise TaskError(f"--teacher {a.teacher}: a fine-tuned model folder is needed "
                            f"({len(self.teacher.fresh)} parameters missing: {few(self.teacher.fresh)})")
        check_teacher_task(self.teacher, self.task)
        self.tokenizer = self.load_tokenizer(a.tokenizer or a.teacher, "--teacher")
        if a.method == "tang" and self.tokenizer.mask_token is None:
            raise TaskError(f"--teacher {a.teacher}: its tokenizer has no mask token for Tang et al.'s masking rule")
        self.mlm = self.mlm_tokenizer = None
        if a.method == "tinybert":
            self.mlm, self.mlm_tokenizer = self.load_mlm()
        self.teacher_digest = params_digest(self.teacher.params)
        self.settings = {  # what the output depends on: a resumed run must have been started with the same
            "task": self.task.name, "train_file": str(self.source), "train_sha256": file_digest(self.source),
            "max_train_samples": a.max_train_samples, "method": a.method, "rules": asdict(self.rules),
            "seed": a.seed, "teacher": str(a.teacher), "teacher_sha256": self.teacher_digest,
            "mlm_model": str(a.mlm_model or a.teacher) if self.mlm is not None else None, "backend": a.backend,
            "dtype": a.dtype, "device": a.device, "max_seq_length": a.max_seq_length, "batch_size": a.batch_size,
            "chunks": [ORIGINAL_CHUNK, AUGMENT_CHUNK]}
        Work.check(self.output_dir / WORK_DIR, self.settings, a.overwrite_output_dir)

    @staticmethod
    def load_tokenizer(folder, option):
        try:
            return load_tokenizer(folder)
        except FileNotFoundError as exc:
            raise TaskError(f"{option}: {exc}") from None

    def load_mlm(self):
        """The masked-LM (--mlm-model, default --teacher) and its tokenizer; TaskError when its family has no MLM
        head or its checkpoint lacks the head's weights."""
        option, folder = ("--mlm-model", self.args.mlm_model) if self.args.mlm_model else ("--teacher",
                                                                                          self.args.teacher)
        name = family_of(Path(folder) / CONFIG_FILE) if (Path(folder) / CONFIG_FILE).is_file() else None
        if name is not None and MLM_HEAD not in family(name).heads:
            raise TaskError(f"{option} {folder}: --method tinybert needs a masked-LM head, and the {name} family has "
                            "none (bert, roberta and funnel have one); give a masked-LM checkpoint as --mlm-model")
        model = load_model(folder, MLM_HEAD, None, seed=self.args.seed)
        if model.folder is None or model.fresh:
            raise TaskError(f"{option} {folder}: the MLM head is missing ({len(model.fresh)} parameters not in the "
                            f"checkpoint: {few(model.fresh)}); --method tinybert needs a masked-LM checkpoint "
                            "(*ForMaskedLM or *ForPreTraining), given as --mlm-model")
        tokenizer_folder = folder if self.args.mlm_model else self.args.tokenizer or folder  # the teacher's tokenizer
        return model, self.load_tokenizer(tokenizer_folder, option)

    # ---- running ----

    def run(self) -> dict:
        a = self.args
        self.output_dir.mkdir(parents=True, exist_ok=True)
        work = Work(self.output_dir / WORK_DIR, self.settings, self.header())
        chunks = [(False, start, min(start + ORIGINAL_CHUNK, len(self.examples)))
                  for start in range(0, len(self.examples), ORIGINAL_CHUNK)]
        chunks += [(True, start, min(start + AUGMENT_CHUNK, len(self.examples)))
                   for start in range(0, len(self.examples), AUGMENT_CHUNK)]
        if work.state["chunks"]:
            log(f"note: resuming {work.folder}: {work.state['chunks']} of {len(chunks)} chunks done, "
                f"{work.state['rows']} rows")
        if self.rules.p_pos:
            log(f"note: {POS_RULE_NOTE}")
        runner = runner_class(a.backend)(self.teacher.family, self.teacher.config, self.teacher.head,
                                         self.teacher.params, dtype=a.dtype, device=a.device)
        self.mlm_runner = None if self.mlm is None else runner_class(a.backend)(
            self.mlm.family, self.mlm.config, self.mlm.head, self.mlm.params, dtype=a.dtype, device=a.device)
        self.prepare_candidates()
        seen = work.seen_rows(len(self.task.glue.text_columns))
        with tqdm(total=2 * len(self.examples), initial=sum(stop - start for _, start, stop in
                                                             chunks[:work.state["chunks"]]),
                  desc="augment", unit="ex", disable=a.no_progress) as bar:
            for augmented, start, stop in chunks[work.state["chunks"]:]:
                if augmented:  # a sample equal to an earlier row (an original too), or with an empty text: dropped
                    rows = [row for i in range(start, stop) for row in self.augmented_rows(i, seen)]
                else:  # the originals as read, duplicates kept
                    rows = [(*self.texts(self.examples[i]), self.label_text(self.examples[i].label))
                            for i in range(start, stop)]
                    seen.update(row[:-1] for row in rows)
                work.commit(rows, self.logits(runner, rows))
                bar.update(stop - start)
        return self.finish(work)

    def header(self) -> str:
        return "\t".join((*self.task.glue.text_columns, self.task.glue.label_column)) + "\n"

    texts = staticmethod(example_texts)

    def label_text(self, label) -> str:
        return label if isinstance(label, str) else repr(float(label))

    def logits(self, runner, rows) -> np.ndarray:
        """The teacher's logits of `rows` (texts..., label) in batches of --batch-size."""
        num_labels = self.task.num_labels
        if not rows:
            return np.zeros((0, num_labels), dtype=self.args.dtype)
        examples = [PairExample(str(i), row[0], row[1] if len(row) > 2 else None, None) for i, row in enumerate(rows)]
        inputs = family(self.teacher.family).model_inputs(self.teacher.config, self.teacher.head)
        features = glue_features(examples, self.task.glue, self.tokenizer, self.args.max_seq_length, inputs)
        logits = predict_all(runner, features, self.args.batch_size)["logits"]
        return logits.astype(self.args.dtype, copy=False).reshape(len(rows), num_labels)

    # ---- samples ----

    def augmented_rows(self, index: int, seen: set) -> list[tuple]:
        """Example `index`'s samples as rows (texts..., label), in draw order, each text of a pair augmented on its
        own (a's draws first); a sample equal to a row in `seen` (an original, an earlier sample) or with an empty
        text dropped, the kept ones added to `seen` (tasks.data.augment.text_samples, keep_new)."""
        example = self.examples[index]
        samples = text_samples(self.texts(example), self.samples, example_rng(self.args.seed, index))
        label = self.label_text(example.label)
        return [(*texts, label) for texts in keep_new(samples, seen)]

    def samples(self, words: list[str], rng) -> list[list[str]]:
        if self.rules.name == "tang":
            return tang_samples(words, self.rules, rng, self.tokenizer.mask_token)
        return tinybert_samples(words, self.candidates(words), self.rules, rng)

    def prepare_candidates(self) -> None:
        """TinyBERT: the vocabulary's whole-word tokens, their texts and the input embeddings."""
        if self.mlm is None:
            return
        self.allowed = whole_word_tokens(self.mlm_tokenizer)
        tokens = self.mlm_tokenizer.convert_ids_to_tokens(list(range(len(self.allowed))))
        self.vocab_words = [self.mlm_tokenizer.convert_tokens_to_string([t]).strip() for t in tokens]
        names = [name for name in self.mlm.params if name.endswith("word_embeddings.weight")]
        if len(names) != 1:
            raise TaskError(f"--mlm-model: no single word-embedding table among its parameters ({few(names)})")
        self.embeddings = np.asarray(self.mlm.params[names[0]])
        self.neighbours = {}  # a multi-piece word -> its candidates (they depend on the word alone)
        ids = self.mlm_tokenizer.build_inputs_with_special_tokens([-1], [-2])
        self.mask_offset, self.specials = ids.index(-1), len(ids) - 2

    def candidates(self, words: list[str]) -> list[list[str]]:
        """Each word's TinyBERT candidates: the MLM's top K whole words at the word's masked position (one piece),
        the K nearest whole words to the mean of its pieces' input embeddings (several pieces); none for a word
        not of letters, or masked past --max-seq-length."""
        tokenizer, k = self.mlm_tokenizer, self.rules.top_k
        if not words:
            return []
        encoded = tokenizer(words, is_split_into_words=True, add_special_tokens=False)
        pieces, owners = encoded["input_ids"], encoded.word_ids()
        out: list[list[str]] = [[] for _ in words]
        queries = []  # (word index, masked ids, token types, mask position)
        for index, word in enumerate(words):
            positions = [p for p, owner in enumerate(owners) if owner == index]
            if not eligible(word) or not positions:
                continue
            if len(positions) > 1:
                if word not in self.neighbours:
                    vector = self.embeddings[[pieces[p] for p in positions]].astype(np.float64).mean(0)
                    ids = nearest_words(vector[None], self.embeddings, self.allowed, k)[0]
                    self.neighbours[word] = [self.vocab_words[i] for i in ids]
                out[index] = self.neighbours[word]
                continue
            if positions[0] + self.specials + 1 > self.args.max_seq_length:
                continue
            masked = list(pieces)
            masked[positions[0]] = tokenizer.mask_token_id
            room = self.args.max_seq_length - self.specials
            first = masked[:room]
            second = list(pieces)[:max(0, room - len(first))]  # the seed's second segment: the sentence unmasked
            ids = tokenizer.build_inputs_with_special_tokens(first, second)
            types = tokenizer.create_token_type_ids_from_sequences(first, second)
            queries.append((index, ids, types, self.mask_offset + positions[0]))
        for start in range(0, len(queries), self.args.batch_size):
            batch = queries[start:start + self.args.batch_size]
            logits = self.mlm_logits(batch)
            for (index, *_), row in zip(batch, logits):
                out[index] = [self.vocab_words[i] for i in top_candidates(row, self.allowed, k)]
        return out

    def mlm_logits(self, queries) -> np.ndarray:
        """[queries, vocab] masked-LM logits at each query's mask position (each row padded to the longest)."""
        length = max(len(ids) for _, ids, _, _ in queries)
        pad = self.mlm_tokenizer.pad_token_id or 0
        features = {"input_ids": np.full((len(queries), length), pad, dtype=np.int64),
                    "token_type_ids": np.zeros((len(queries), length), dtype=np.int64),
                    "attention_mask": np.zeros((len(queries), length), dtype=np.int64)}
        for row, (_, ids, types, _) in enumerate(queries):
            features["input_ids"][row, :len(ids)] = ids
            features["token_type_ids"][row, :len(ids)] = types
            features["attention_mask"][row, :len(ids)] = 1
        inputs = {spec.name: features[spec.feature].astype(spec.dtype, copy=False)
                  for spec in family(self.mlm.family).model_inputs(self.mlm.config, MLM_HEAD)}
        logits = self.mlm_runner.predict(inputs)["logits"]
        return logits[np.arange(len(queries)), [position for *_, position in queries]]

    # ---- the end ----

    def finish(self, work: "Work") -> dict:
        """The logits safetensors (with the rows' sha256 and the settings) and train.tsv under their names; the work
        folder removed."""
        rows, labels = work.state["rows"], self.task.num_labels
        digest = file_digest(work.rows_path)
        metadata = {**{key: json.dumps(value) for key, value in self.settings.items()}, "rows": str(rows),
                    "original_rows": str(len(self.examples)), "train_sha256": digest,
                    "teacher_sha256": self.teacher_digest, "teacher": str(self.args.teacher),
                    "pos_rule": "not applied" if self.rules.p_pos else "none"}
        dtype = np.dtype(self.args.dtype)
        write_safetensors(self.logits_file, [(LOGITS_TENSOR, dtype, (rows, labels))],
                          lambda _: np.fromfile(work.logits_path, dtype=dtype).reshape(rows, labels), metadata)
        os.replace(work.rows_path, self.train_file)
        shutil.rmtree(work.folder)
        return {"train_file": str(self.train_file), "logits_file": str(self.logits_file), "rows": rows,
                "original_rows": len(self.examples), "augmented_rows": rows - len(self.examples),
                "method": self.rules.name}


class Work:
    """The unfinished output: rows.tsv and logits.bin appended chunk by chunk; state.json says how many chunks,
    rows and bytes are committed (written after the data reached the disk). Opening it truncates the files to
    the committed sizes (Work.check first refuses a folder of other settings)."""

    @staticmethod
    def check(folder: Path, settings: dict, discard: bool) -> None:
        """TaskError when `folder` holds an unfinished run of other settings, unless `discard` (then it goes)."""
        state_path = folder / STATE_FILE
        if not state_path.is_file():
            return
        try:
            stored = json.loads(state_path.read_text())["settings"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            stored = {"unreadable": str(exc)}
        changed = sorted(key for key in {*settings, *stored} if stored.get(key) != json.loads(json.dumps(
            settings.get(key))))
        if not changed:
            return
        if discard:
            log(f"note: {folder}: an unfinished run of other settings ({', '.join(changed)}) is removed")
            shutil.rmtree(folder)
            return
        raise TaskError(f"{folder} holds an unfinished run of other settings ({', '.join(changed)}); rerun it with "
                        f"those, give --overwrite-output-dir to start anew, or remove {folder}")

    def __init__(self, folder: Path, settings: dict, header: str):
        self.folder, self.settings = folder, settings
        self.rows_path, self.logits_path, self.state_path = (folder / ROWS_FILE, folder / LOGITS_FILE,
                                                             folder / STATE_FILE)
        self.state = self.read_state()
        if self.state is None:
            folder.mkdir(parents=True, exist_ok=True)
            self.rows_path.write_bytes(header.encode())
            self.logits_path.write_bytes(b"")
            self.state = {"settings": settings, "chunks": 0, "rows": 0, "rows_bytes": len(header.encode()),
                          "logits_bytes": 0}
            self.write_state()
        for path, size in ((self.rows_path, self.state["rows_bytes"]), (self.logits_path, self.state["logits_bytes"])):
            with open(path, "r+b") as handle:
                handle.truncate(size)

    def read_state(self):
        if not self.state_path.is_file():
            if self.folder.exists():
                shutil.rmtree(self.folder)  # a run stopped before its first commit
            return None
        return json.loads(self.state_path.read_text())  # readable: Work.check read it

    def write_state(self) -> None:
        tmp = self.state_path.with_name(STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(self.state, sort_keys=True))
        os.replace(tmp, self.state_path)

    def seen_rows(self, text_columns: int) -> set:
        """The text tuples of the committed rows (a resumed run drops what the interrupted one dropped)."""
        lines = self.rows_path.read_text(encoding="utf-8").split("\n")[1:-1]
        return {tuple(line.split("\t")[:text_columns]) for line in lines}

    def commit(self, rows: list[tuple], logits: np.ndarray) -> None:
        text = "".join("\t".join(row) + "\n" for row in rows).encode("utf-8")
        data = np.ascontiguousarray(logits).astype(logits.dtype.newbyteorder("<"), copy=False).tobytes()
        for path, blob in ((self.rows_path, text), (self.logits_path, data)):
            with open(path, "ab") as handle:
                handle.write(blob)
                handle.flush()
                os.fsync(handle.fileno())
        self.state.update(chunks=self.state["chunks"] + 1, rows=self.state["rows"] + len(rows),
                          rows_bytes=self.state["rows_bytes"] + len(text),
                          logits_bytes=self.state["logits_bytes"] + len(data))
        self.write_state()
