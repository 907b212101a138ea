"""BoolQ: JSONL reader ({"question", "passage", "answer": true/false, "title"?}) and pair features.

Pairs are (question, passage); labels are BOOLQ_LABELS ids (False 0, True 1). Test files have no answer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tasks.data.features import PairExample, pair_features

BOOLQ_LABELS = ("False", "True")


def read_boolq(path: str | Path) -> list[PairExample]:
    """One PairExample per non-blank line; ValueError names the file and 1-based line of a bad record."""
    path = Path(path)
    examples = []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{where}: invalid JSON ({error.msg})") from None
            if not isinstance(record, dict) or not all(isinstance(record.get(k), str) for k in ("question", "passage")):
                raise ValueError(f"{where}: a BoolQ record needs string fields 'question' and 'passage'")
            answer = record.get("answer")
            if answer is not None and not isinstance(answer, bool):
                raise ValueError(f"{where}: answer must be true or false, found {answer!r}")
            label = None if answer is None else BOOLQ_LABELS[answer]
            examples.append(PairExample(f"{path.stem}-{len(examples)}", record["question"], record["passage"], label))
    return examples


def boolq_features(examples: Sequence[PairExample], tokenizer, max_seq_length: int,
                   inputs=None) -> dict[str, np.ndarray]:
    """The model's inputs (default int64 input_ids/token_type_ids/attention_mask [n, max_seq_length]) and
    labels [n] when answered."""
    return pair_features(examples, tokenizer, max_seq_length, BOOLQ_LABELS, inputs)
