"""RACE and BoolQ: readers on tiny files in the released layouts, malformed records, features."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tasks.data import DataError
from tasks.data.boolq import boolq_features, read_boolq
from tasks.data.race import option_text, race_features, read_race, read_race_file

ARTICLE = "The dog sat on the rug. The cat sat on the mat."
MIDDLE = {"id": "middle1.txt", "article": ARTICLE, "questions": ["The _ sat on the mat.", "Did the cat sit?"],
          "options": [["cat", "dog", "bird", "fish"], ["yes", "no", "maybe", "never"]], "answers": ["A", "A"]}
HIGH = {"id": "high7.txt", "article": "Ten men ran.", "questions": ["How many men ran?"],
        "options": [["one", "two", "five", "ten"]], "answers": ["D"]}


@pytest.fixture
def race_dir(tmp_path):
    for level, record in (("middle", MIDDLE), ("high", HIGH)):
        folder = tmp_path / "RACE" / "train" / level
        folder.mkdir(parents=True)
        (folder / f"{record['id'].removeprefix(level)}").write_text(json.dumps(record), encoding="utf-8")
    return tmp_path / "RACE"


def test_race_reader(race_dir):
    examples = read_race(race_dir, "train")
    assert [(e.guid, e.question, e.options, e.label) for e in examples] == [
        ("middle/middle1.txt-1", "The _ sat on the mat.", ("cat", "dog", "bird", "fish"), 0),
        ("middle/middle1.txt-2", "Did the cat sit?", ("yes", "no", "maybe", "never"), 0),
        ("high/high7.txt-1", "How many men ran?", ("one", "two", "five", "ten"), 3),
    ]
    assert examples[0].article == ARTICLE
    assert [e.guid for e in read_race(race_dir, "train", levels=("high",))] == ["high/high7.txt-1"]
    with pytest.raises(DataError, match="dev.*no such RACE folder"):
        read_race(race_dir, "dev")


@pytest.mark.parametrize(
    "question, option, text",
    [("The _ sat on the mat.", "cat", "The cat sat on the mat."), ("A ___ and a _.", "b", "A b and a b."),
     ("Who sat?", "the cat", "Who sat? the cat")],
)
def test_option_text(question, option, text):
    assert option_text(question, option) == text


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r["options"][1].pop(), "question 2: expected 4 options, found 3"),
        (lambda r: r["answers"].__setitem__(0, "E"), "question 1: answer 'E' is not one of"),
        (lambda r: r["answers"].pop(), "2 questions but 2 option lists / 1 answers"),
        (lambda r: r.pop("article"), "not a RACE article file"),
    ],
)
def test_race_rejects_bad_files(tmp_path, change, message):
    record = json.loads(json.dumps(MIDDLE))
    change(record)
    path = tmp_path / "1.txt"
    path.write_text(json.dumps(record), encoding="utf-8")
    with pytest.raises(ValueError, match=f"1.txt: {message}"):
        read_race_file(path)


def test_race_features(race_dir, make_tokenizer):
    examples = read_race(race_dir, "train")
    tokenizer = make_tokenizer([ARTICLE, "bird fish maybe never ten men ran how many one two five"])

    features = race_features(examples, tokenizer, max_seq_length=24)

    assert {name: array.shape for name, array in features.items()} == {
        "input_ids": (3, 4, 24), "token_type_ids": (3, 4, 24), "attention_mask": (3, 4, 24), "labels": (3,)}
    assert features["labels"].tolist() == [0, 0, 3]
    # example 0, option 1 ("dog" in the blank): 14 article tokens + 7 question tokens + 3 specials = 24
    tokens = tokenizer.convert_ids_to_tokens(features["input_ids"][0, 1].tolist())
    assert tokens == ["[CLS]", *"the dog sat on the rug . the cat sat on the mat .".split(), "[SEP]",
                      *"the dog sat on the mat .".split(), "[SEP]"]
    assert features["token_type_ids"][0, 1].tolist() == [0] * 16 + [1] * 8
    tokens = tokenizer.convert_ids_to_tokens(features["input_ids"][2, 3].tolist())
    assert tokens[:11] == ["[CLS]", "ten", "men", "ran", ".", "[SEP]", "how", "many", "men", "ran", "?"]
    assert tokens[11:13] == ["ten", "[SEP]"] and features["attention_mask"][2, 3].sum() == 13


def test_race_without_answers_has_no_labels(tmp_path, make_tokenizer):
    record = {key: value for key, value in HIGH.items() if key != "answers"}
    path = tmp_path / "9.txt"
    path.write_text(json.dumps(record), encoding="utf-8")
    examples = read_race_file(path)
    assert examples[0].label is None
    assert "labels" not in race_features(examples, make_tokenizer(), max_seq_length=16)


BOOLQ_LINES = [
    {"question": "is the cat on the mat", "title": "Cats", "answer": True, "passage": "The cat sat on the mat."},
    {"question": "is the dog on the mat", "answer": False, "passage": "The dog sat on the rug."},
]


def test_boolq_reader_and_features(tmp_path, make_tokenizer):
    path = tmp_path / "val.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in BOOLQ_LINES) + "\n", encoding="utf-8")
    examples = read_boolq(path)
    assert [(e.guid, e.text_a, e.text_b, e.label) for e in examples] == [
        ("val-0", "is the cat on the mat", "The cat sat on the mat.", "True"),
        ("val-1", "is the dog on the mat", "The dog sat on the rug.", "False"),
    ]
    tokenizer = make_tokenizer()
    features = boolq_features(examples, tokenizer, max_seq_length=20)
    assert features["labels"].tolist() == [1, 0] and features["input_ids"].shape == (2, 20)
    assert tokenizer.convert_ids_to_tokens(features["input_ids"][0].tolist()) == [
        "[CLS]", *"is the cat on the mat".split(), "[SEP]", *"the cat sat on the mat .".split(), "[SEP]",
        *["[PAD]"] * 4]
    assert features["token_type_ids"][0].tolist() == [0] * 8 + [1] * 8 + [0] * 4


def test_boolq_test_file_without_answers(tmp_path, make_tokenizer):
    path = tmp_path / "test.jsonl"
    path.write_text(json.dumps({"question": "is it", "passage": "It is."}) + "\n", encoding="utf-8")
    examples = read_boolq(path)
    assert examples[0].label is None
    assert "labels" not in boolq_features(examples, make_tokenizer(), max_seq_length=8)


@pytest.mark.parametrize(
    "bad_line, message",
    [('{"question": "is it", "passage": ', "invalid JSON"),
     ('{"question": "is it", "passage": "It is.", "answer": "yes"}', "answer must be true or false"),
     ('{"question": "is it", "answer": true}', "a BoolQ record needs string fields 'question' and 'passage'")],
)
def test_boolq_rejects_bad_lines(tmp_path, bad_line, message):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(BOOLQ_LINES[0]) + "\n\n" + bad_line + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=f"train.jsonl:3: {message}"):
        read_boolq(path)


def test_boolq_labels_are_ids_of_false_true(tmp_path, make_tokenizer):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in reversed(BOOLQ_LINES)), encoding="utf-8")
    labels = boolq_features(read_boolq(path), make_tokenizer(), max_seq_length=8)["labels"]
    assert labels.dtype == np.int64 and labels.tolist() == [0, 1]
