"""RACE: reader for the released folder layout and 4-way multiple-choice features.

Layout: <data_dir>/<split>/<level>/*.txt with split train|dev|test and level middle|high; each file is one
JSON object {"id", "article", "questions": [...], "options": [[4 strings], ...], "answers": ["A".."D"]}.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.data.features import encode_inputs

ANSWER_LETTERS = "ABCD"
LEVELS = ("middle", "high")
BLANK = re.compile(r"_+")  # a cloze question marks its gap with underscores


@dataclass(frozen=True)
class RaceExample:
    guid: str
    article: str
    question: str
    options: tuple[str, ...]
    label: int | None  # index of the right option; None when the file has no answers


def read_race_file(path: str | Path) -> list[RaceExample]:
    """The questions of one RACE article file; ValueError names the file and question on bad entries."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        article, questions, options = record["article"], record["questions"], record["options"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a RACE article file ({error})") from None
    answers = record.get("answers")
    if len(options) != len(questions) or (answers is not None and len(answers) != len(questions)):
        raise ValueError(f"{path}: {len(questions)} questions but {len(options)} option lists / "
                         f"{'no' if answers is None else len(answers)} answers")
    name = record.get("id", path.name)
    examples = []
    for number, (question, choices) in enumerate(zip(questions, options), start=1):
        where = f"{path}: question {number}"
        if len(choices) != len(ANSWER_LETTERS):
            raise ValueError(f"{where}: expected {len(ANSWER_LETTERS)} options, found {len(choices)}")
        if answers is not None and answers[number - 1] not in ANSWER_LETTERS:
            raise ValueError(f"{where}: answer {answers[number - 1]!r} is not one of {list(ANSWER_LETTERS)}")
        label = None if answers is None else ANSWER_LETTERS.index(answers[number - 1])
        examples.append(RaceExample(f"{path.parent.name}/{name}-{number}", article, question, tuple(choices), label))
    return examples


def read_race(data_dir: str | Path, split: str, levels: Sequence[str] = LEVELS) -> list[RaceExample]:
    """All questions of `split` (train, dev, test) for the given levels, files in sorted order."""
    examples = []
    for level in levels:
        folder = Path(data_dir) / split / level
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such RACE folder")
        for path in sorted(folder.glob("*.txt")):
            examples.extend(read_race_file(path))
    return examples


def option_text(question: str, option: str) -> str:
    """The second segment for one option: the option put into the question's blank, else appended."""
    if BLANK.search(question):
        return BLANK.sub(lambda _: option, question)
    return f"{question} {option}"


def race_features(examples: Sequence[RaceExample], tokenizer, max_seq_length: int,
                  inputs=None) -> dict[str, np.ndarray]:
    """Pairs (article, option_text) for each option: the model's inputs (default int64 input_ids,
    token_type_ids, attention_mask) [n, 4, max_seq_length] and labels [n]."""
    choices = len(ANSWER_LETTERS)
    encoded = encode_inputs(
        tokenizer,
        [example.article for example in examples for _ in range(choices)],
        [option_text(example.question, option) for example in examples for option in example.options],
        max_seq_length,
        inputs,
    )
    features = {name: array.reshape(len(examples), choices, max_seq_length) for name, array in encoded.items()}
    labels = [example.label for example in examples]
    if examples and all(label is not None for label in labels):
        features["labels"] = np.asarray(labels, dtype=np.int64)
    elif any(label is not None for label in labels):
        raise ValueError("some RACE examples have answers and some do not")
    return features
