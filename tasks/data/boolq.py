"""BoolQ: JSONL reader ({"question", "passage", "answer" or "label": true/false, "title"?}) and pair features.

Pairs are (question, passage); labels are BOOLQ_LABELS ids (False 0, True 1). Test files have no answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tasks.data.features import PairExample, pair_features
from tasks.data.files import DataError, file_stem, no_examples, parse_json, read_text, require, text_lines

BOOLQ_LABELS = ("False", "True")
ANSWER_KEYS = ("answer", "label")  # the BoolQ release, SuperGLUE


def read_boolq(path: str | Path) -> list[PairExample]:
    """One PairExample per non-blank line (gzipped files too); DataError names the file and 1-based line.

    The answer is "answer" (the BoolQ release) or "label" (SuperGLUE's copy); a record without either is
    unlabelled (test files), and a file must not mix labelled and unlabelled records.
    """
    path = Path(path)
    examples = []
    for line_number, line in enumerate(text_lines(read_text(path)), start=1):
        if not line.strip():
            continue
        record = require(parse_json(path, line, line_number), dict, path, line_number, "a BoolQ record")
        if not all(isinstance(record.get(key), str) for key in ("question", "passage")):
            raise DataError(path, line_number, "a BoolQ record needs string fields 'question' and 'passage'")
        answers = {key: record[key] for key in ANSWER_KEYS if key in record}
        for key, answer in answers.items():
            require(answer, bool, path, line_number, key)
        if len(set(answers.values())) > 1:
            raise DataError(path, line_number, f"'answer' and 'label' disagree: {answers}")
        label = BOOLQ_LABELS[next(iter(answers.values()))] if answers else None
        if examples and (label is None) != (examples[-1].label is None):
            raise DataError(path, line_number, "some records have an answer and some do not")
        examples.append(PairExample(f"{file_stem(path)}-{len(examples)}", record["question"], record["passage"],
                                    label))
    if not examples:
        raise no_examples(path, "records")
    return examples


def boolq_features(examples: Sequence[PairExample], tokenizer, max_seq_length: int,
                   inputs=None) -> dict[str, np.ndarray]:
    """The model's inputs (default int64 input_ids/token_type_ids/attention_mask [n, max_seq_length]) and
    labels [n] when answered."""
    return pair_features(examples, tokenizer, max_seq_length, BOOLQ_LABELS, inputs)
