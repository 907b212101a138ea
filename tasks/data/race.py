"""RACE: reader for the released folder layout and 4-way multiple-choice features.

Layout: <data_dir>/<split>/<level>/*.txt with split train|dev|test and level middle|high; each file is one
JSON object {"id", "article", "questions": [...], "options": [[4 strings], ...], "answers": ["A".."D"]}.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.data.features import encode_inputs
from tasks.data.files import DataError, describe, no_examples, parse_json, read_text, require

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
    """The questions of one RACE article file; DataError names the file and key or question of a bad entry."""
    path = Path(path)
    record = parse_json(path, read_text(path))
    if not isinstance(record, dict) or "article" not in record or "questions" not in record \
            or "options" not in record:
        raise DataError(path, None, "not a RACE article file (an object with 'article', 'questions', 'options' "
                                    f"and 'answers' was expected, found {describe(record)})")
    article = require(record["article"], str, path, "article", "the article")
    questions = require(record["questions"], list, path, "questions", "questions")
    options = require(record["options"], list, path, "options", "options")
    answers = require(record.get("answers"), (list, type(None)), path, "answers", "answers")
    if len(options) != len(questions) or (answers is not None and len(answers) != len(questions)):
        raise DataError(path, None, f"{len(questions)} questions but {len(options)} option lists / "
                                    f"{'no' if answers is None else len(answers)} answers")
    name = str(record.get("id", path.name))
    examples = []
    for number, (question, choices) in enumerate(zip(questions, options), start=1):
        where = f"question {number}"
        require(question, str, path, f"questions[{number - 1}]", "a question")
        require(choices, list, path, f"options[{number - 1}]", "the options of a question")
        if len(choices) != len(ANSWER_LETTERS):
            raise DataError(path, None, f"{where}: expected {len(ANSWER_LETTERS)} options, found {len(choices)}")
        for index, choice in enumerate(choices):
            require(choice, str, path, f"options[{number - 1}][{index}]", "an option")
        # a tuple: `in` on the string would take "" and "AB" for letters (and fail on non-strings)
        if answers is not None and answers[number - 1] not in tuple(ANSWER_LETTERS):
            raise DataError(path, None, f"{where}: answer {answers[number - 1]!r} is not one of "
                                        f"{list(ANSWER_LETTERS)}")
        label = None if answers is None else ANSWER_LETTERS.index(answers[number - 1])
        examples.append(RaceExample(f"{path.parent.name}/{name}-{number}", article, question, tuple(choices), label))
    if not examples:
        raise no_examples(path, "questions")
    return examples


def read_race(data_dir: str | Path, split: str, levels: Sequence[str] = LEVELS) -> list[RaceExample]:
    """All questions of `split` (train, dev, test) for the given levels, files in sorted order."""
    examples = []
    for level in levels:
        folder = Path(data_dir) / split / level
        if not folder.is_dir():
            raise DataError(folder, None, "no such RACE folder")
        for path in sorted(folder.glob("*.txt")):
            examples.extend(read_race_file(path))
    if not examples:
        raise no_examples(Path(data_dir) / split, f"RACE article files (*.txt in {', '.join(levels)})")
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
    labels = race_labels(examples)
    if labels is not None:
        features["labels"] = labels
    return features


def race_labels(examples: Sequence[RaceExample]) -> np.ndarray | None:
    """The answers' option indices [n] (int64), or None when the examples have none."""
    labels = [example.label for example in examples]
    if examples and all(label is not None for label in labels):
        return np.asarray(labels, dtype=np.int64)
    if any(label is not None for label in labels):
        raise ValueError("some RACE examples have answers and some do not")
    return None
