"""The task layer of the DeFormer family: split-pair features (question part, passage part) for SQuAD v1.1/v2.0,
RACE and BoolQ, the CLI (finetune from a BERT checkpoint with a layer split, evaluate in another backend),
training parity of the deformer heads, distillation from a full model, and bad input.

Features are checked against the base model's own features of the same text: the question part followed by the
passage part, without the padding between them, is the base model's pair encoding (ids and token types).
"""
from __future__ import annotations

import gzip
import json
from types import SimpleNamespace

import numpy as np
import pytest

from backends.spec import InputSpec
from tasks.data.boolq import boolq_features
from tasks.data.features import PairExample
from tasks.data.race import RaceExample, option_text, race_features
from tasks.data.split_pair import PartLayout, reads_split_pair, window_starts
from tasks.data.squad import SquadAnswer, SquadExample, postprocess_squad, squad_features
from tasks.train.task import Options, Split, make_task

FEATURES = ("input_ids", "attention_mask", "token_type_ids")


def deformer_inputs(choices: bool = False) -> tuple:
    """The DeFormer's declared inputs (/work/notes/interfaces.md "Inputs"), in forward() order."""
    axes = ("batch", "choices", "seq") if choices else ("batch", "seq")
    return tuple(InputSpec(f"{part}_{feature}", "int64", axes, feature, text)
                 for part, text in (("question", "a"), ("passage", "b")) for feature in FEATURES)


SPLIT_CONFIG = SimpleNamespace(max_question_length=16)  # what reads_split_pair looks at


def joined(features: dict, row) -> tuple[list, list]:
    """(ids, token types) of the question part then the passage part of one row, each without its padding."""
    ids, types = [], []
    for part in ("question", "passage"):
        mask = features[f"{part}_attention_mask"][row].astype(bool)
        ids += features[f"{part}_input_ids"][row][mask].tolist()
        types += features[f"{part}_token_type_ids"][row][mask].tolist()
    return ids, types


def base_row(features: dict, row) -> tuple[list, list]:
    mask = features["input_ids"][row] != 0
    return features["input_ids"][row][mask].tolist(), features["token_type_ids"][row][mask].tolist()


CONTEXT = ("the cat sat on the mat . the dog sat on the cat . a man went to the city and the woman went home "
           "after school . he read a book , she wrote a long story about the old company .")
QUESTIONS = (("q1", "where did the dog sit ?", "on the cat"),
             ("q2", "what did she write about ?", "the old company"),
             ("q3", "who went home after school and why did the man go to the city ?", "the woman"),
             ("q4", "when did the cat sit on the mat ?", None))  # unanswerable (v2.0)


def squad_examples(version_2=False):
    examples = []
    for qas_id, question, answer in QUESTIONS:
        if answer is None and not version_2:
            continue
        answers = () if answer is None else (SquadAnswer(answer, CONTEXT.index(answer)),)
        examples.append(SquadExample(qas_id, "t", question, CONTEXT, answers, answer is None))
    return examples


def write_squad(path, examples):
    """A SQuAD JSON file of the examples (gzipped when the name ends in .gz); one paragraph per context."""
    paragraphs = {}
    for e in examples:
        paragraphs.setdefault(e.context, []).append(
            {"id": e.qas_id, "question": e.question, "is_impossible": e.is_impossible,
             "answers": [{"text": a.text, "answer_start": a.start} for a in e.answers]})
    data = {"version": "2.0", "data": [{"title": "t", "paragraphs": [{"context": c, "qas": q}
                                                                     for c, q in paragraphs.items()]}]}
    text = json.dumps(data).encode()
    path.write_bytes(gzip.compress(text) if path.suffix == ".gz" else text)
    return path


def test_the_layout_is_read_from_the_tokenizer(make_tokenizer):
    layout = PartLayout.from_tokenizer(make_tokenizer())
    assert [i for i, _ in layout.question_prefix] == [2] and [i for i, _ in layout.question_suffix] == [3]  # CLS, SEP
    assert layout.passage_prefix == () and [i for i, _ in layout.passage_suffix] == [3]
    assert (layout.question_type, layout.passage_type) == (0, 1)
    assert reads_split_pair(SPLIT_CONFIG, deformer_inputs())
    assert not reads_split_pair(SimpleNamespace(), deformer_inputs())
    assert not reads_split_pair(SPLIT_CONFIG, (InputSpec("input_ids", "int64", ("batch", "seq"), "input_ids"),))


def test_window_starts_are_transformers_overflow():
    assert window_starts(5, 8, 2) == [0]
    assert window_starts(10, 4, 1) == [0, 3, 6]  # [0, 4) [3, 7) [6, 10)
    assert window_starts(11, 4, 1) == [0, 3, 6, 9]


@pytest.mark.parametrize("version_2", [False, True])
def test_squad_windows_join_to_the_base_models_windows(make_tokenizer, version_2, tmp_path):
    """Each window's [question part; passage part] is the base model's window of the same question; the span
    targets point at the same tokens; unanswerable windows point at the question's first token."""
    examples = squad_examples(version_2)
    tokenizer = make_tokenizer([CONTEXT] + [q for _, q, _ in QUESTIONS])
    path = write_squad(tmp_path / "dev.json.gz", examples)
    task = make_task("squad_v2" if version_2 else "squad", files={"dev": path},
                     options=Options(max_seq_length=12, doc_stride=4, max_query_length=6, split_pair=True))
    split = task.load("dev", tokenizer, None, deformer_inputs())
    windows = split.windows
    features = split.inputs
    question_width = features["question_input_ids"].shape[1]
    assert question_width == 6 + 2 and features["passage_input_ids"].shape[1] == 12  # ragged: padded to the longest
    context_tokens = len(tokenizer(CONTEXT, add_special_tokens=False)["input_ids"])
    per_example = len(window_starts(context_tokens, 11, 4))
    assert len(windows) == per_example * len(examples)
    for index, example in enumerate(examples):
        # the base model with the same question length in its window: max_seq_length = question part + passage part
        question_tokens = min(6, len(tokenizer(example.question, add_special_tokens=False)["input_ids"]))
        base = squad_features([example], tokenizer, max_seq_length=question_tokens + 2 + 12, doc_stride=4,
                              max_query_length=6)
        rows = np.flatnonzero(windows.example_index == index)
        assert len(rows) == len(base)
        for window, row in enumerate(rows):
            assert joined(features, row) == base_row(base.inputs, window)
            # positions: the base's positions with the question part's padding in between
            shift = question_width - (question_tokens + 2)
            for name in ("start_positions", "end_positions"):
                expected = base.inputs[name][window]
                assert features[name][row] == (0 if expected == 0 else expected + shift)
            # offsets over the joint sequence: the base window's, at the same tokens
            real = np.concatenate([features["question_attention_mask"][row], features["passage_attention_mask"][row]])
            np.testing.assert_array_equal(windows.offsets[row][real.astype(bool)],
                                          base.offsets[window][base.inputs["attention_mask"][window].astype(bool)])
        if not example.answers:
            assert (features["start_positions"][rows] == 0).all() and (features["end_positions"][rows] == 0).all()
    answered = [i for i, e in enumerate(examples) if e.answers]
    assert any(features["start_positions"][windows.example_index == i].max() > 0 for i in answered)
    # decoding maps logits over the joint sequence back to passage characters
    start = np.full(windows.offsets.shape[:2], -5.0)
    end = start.copy()
    for row in range(len(windows)):
        if features["start_positions"][row] > 0:
            start[row, features["start_positions"][row]] = end[row, features["end_positions"][row]] = 5.0
        else:
            start[row, 0] = end[row, 0] = 9.0 if version_2 else -9.0
    answers, _ = postprocess_squad(examples, windows, start, end, version_2=version_2)
    assert answers == {e.qas_id: e.answers[0].text if e.answers else "" for e in examples}


def test_boolq_parts_join_to_the_base_pair_and_are_ragged(make_tokenizer):
    examples = [PairExample("b-0", "is the cat on the mat", "the cat sat on the mat .", "True"),
                PairExample("b-1", "did he go", "he went to the city and read a long book about the world .",
                            "False")]
    tokenizer = make_tokenizer([e.text_a + " " + e.text_b for e in examples])
    task = make_task("boolq", options=Options(max_seq_length=32, max_query_length=10, split_pair=True))
    features = task.features(Split({}, examples), tokenizer, deformer_inputs())
    base = boolq_features(examples, tokenizer, 64)
    for row in range(2):
        assert joined(features, row) == base_row(base, row)
    lengths = features["passage_attention_mask"].sum(1)
    assert lengths[0] < lengths[1] == features["passage_attention_mask"].shape[1]  # padded at the end only
    assert features["passage_attention_mask"][0, lengths[0]:].sum() == 0
    assert features["question_attention_mask"].sum(1).tolist() == [8, 5]
    assert features["labels"].tolist() == [1, 0]


def test_race_parts_carry_the_choices_axis(make_tokenizer):
    article = "the man went to the city . he read a book ."
    examples = [RaceExample("r-1", article, "where did the man go ?", ("home", "the city", "school", "the mat"), 1),
                RaceExample("r-2", article, "he read a _ .", ("book", "story", "cat", "dog"), 0)]
    tokenizer = make_tokenizer([article, "where did the man go ? home city school mat he read a book story"])
    task = make_task("race", options=Options(max_seq_length=20, max_query_length=12, split_pair=True))
    features = task.features(Split({}, examples), tokenizer, deformer_inputs(choices=True))
    assert features["question_input_ids"].shape[:2] == (2, 4) and features["passage_input_ids"].shape[:2] == (2, 4)
    base = race_features(examples, tokenizer, 40)  # the base reads (article, question with option)
    for example in range(2):
        for choice in range(4):
            ids, _ = joined({k: v[example] for k, v in features.items() if k != "labels"}, choice)
            question = tokenizer(option_text(examples[example].question, examples[example].options[choice]),
                                 add_special_tokens=False)["input_ids"]
            passage = tokenizer(article, add_special_tokens=False)["input_ids"]
            assert ids == [2, *question, 3, *passage, 3]
            assert sorted(ids) == sorted(base_row({k: v[example] for k, v in base.items()}, choice)[0])
    assert features["labels"].tolist() == [1, 0]


def test_an_empty_passage_is_refused_naming_the_example(make_tokenizer, tmp_path):
    path = tmp_path / "dev.jsonl"
    path.write_text(json.dumps({"question": "is it", "passage": "\u200b", "answer": True}) + "\n")
    task = make_task("boolq", options=Options(split_pair=True), files={"dev": path})
    with pytest.raises(ValueError, match=r"dev.jsonl: dev-0: the passage is empty"):
        task.load("dev", make_tokenizer(), None, deformer_inputs())
