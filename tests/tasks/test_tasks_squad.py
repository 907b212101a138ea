"""SQuAD: reader, sliding windows, span decoding and the official v1.1/v2.0 scores (hand-computed)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tasks.data import DataError
from tasks.data.squad import (
    NULL_ODDS_FILE,
    PREDICTIONS_FILE,
    SquadAnswer,
    SquadExample,
    exact_match,
    normalize_answer,
    postprocess_squad,
    read_squad,
    squad_features,
    squad_v1_scores,
    squad_v2_scores,
    token_f1,
    write_squad_outputs,
)

CONTEXT = "The cat sat on the mat. The dog sat on the rug."
SQUAD_V2 = {
    "version": "v2.0",
    "data": [{"title": "Pets", "paragraphs": [{"context": CONTEXT, "qas": [
        {"id": "q1", "question": "Where did the cat sit?", "is_impossible": False,
         "answers": [{"text": "on the mat", "answer_start": 12}, {"text": "the mat", "answer_start": 15}]},
        {"id": "q2", "question": "Where did the bird sit?", "is_impossible": True, "answers": [],
         "plausible_answers": [{"text": "the rug", "answer_start": 39}]},
        {"id": "q3", "question": "Where did the dog sit?", "is_impossible": False,
         "answers": [{"text": "on the rug", "answer_start": 36}]},
    ]}]}],
}
# [CLS] where did the X sit ? [SEP] = positions 0..7, so context token k sits at position 8 + k:
# the(8) cat(9) sat(10) on(11) the(12) mat(13) .(14) the(15) dog(16) sat(17) on(18) the(19) rug(20) .(21) [SEP](22)


@pytest.fixture
def squad_file(tmp_path):
    path = tmp_path / "dev-v2.0.json"
    path.write_text(json.dumps(SQUAD_V2), encoding="utf-8")
    return path


@pytest.fixture
def tokenizer(make_tokenizer):
    return make_tokenizer([CONTEXT, "where did the bird sit?"])


def test_reader_keeps_all_answers_and_impossible(squad_file):
    q1, q2, q3 = read_squad(squad_file)
    assert q1 == SquadExample("q1", "Pets", "Where did the cat sit?", CONTEXT,
                              (SquadAnswer("on the mat", 12), SquadAnswer("the mat", 15)), False)
    assert q2.is_impossible and q2.answers == ()  # plausible answers are not gold answers
    assert [CONTEXT[a.start : a.start + len(a.text)] for a in q1.answers + q3.answers] == [
        "on the mat", "the mat", "on the rug"]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda qa: qa[0]["answers"][0].update(text="on the sofa"), "qas\\[0\\].answers\\[0\\]: question 'q1': the "
         "answer text \"on the sofa\" does not occur in the context"),
        (lambda qa: qa[1].update(id="q1"), "qas\\[1\\].id: missing or duplicate id"),
        (lambda qa: qa[2].pop("question"), "qas\\[2\\]: missing key 'question'"),
    ],
)
def test_reader_rejects_bad_entries(tmp_path, change, message):
    data = json.loads(json.dumps(SQUAD_V2))
    change(data["data"][0]["paragraphs"][0]["qas"])
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(DataError, match=f"bad.json:data\\[0\\].paragraphs\\[0\\].{message}"):
        read_squad(path)


def test_features_single_window(squad_file, tokenizer):
    features = squad_features(read_squad(squad_file), tokenizer, max_seq_length=32, doc_stride=4)
    assert len(features) == 3 and features.example_index.tolist() == [0, 1, 2]
    assert {name: array.shape for name, array in features.inputs.items()} == {
        "input_ids": (3, 32), "token_type_ids": (3, 32), "attention_mask": (3, 32),
        "start_positions": (3,), "end_positions": (3,)}
    assert all(array.dtype == np.int64 for array in features.inputs.values())
    assert features.inputs["start_positions"].tolist() == [11, 0, 18]  # first gold answer / CLS / "on the rug"
    assert features.inputs["end_positions"].tolist() == [13, 0, 20]
    assert features.cls_index.tolist() == [0, 0, 0]
    assert (features.offsets[0, :8] == -1).all() and (features.offsets[0, 22:] == -1).all()
    assert features.offsets[0, 13].tolist() == [19, 22]  # "mat"


def test_features_sliding_windows(squad_file, tokenizer):
    examples = read_squad(squad_file)
    features = squad_features(examples, tokenizer, max_seq_length=16, doc_stride=2)
    # 16 - 6 question tokens - 3 special tokens = 7 context tokens a window; windows advance by 7 - 2:
    # context tokens 0-6, 5-11, 10-13 for each of the three questions.
    assert features.example_index.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    q3 = [window for window in range(9) if features.example_index[window] == 2]
    first_tokens = [features.offsets[w, 8, 0] for w in q3]
    assert first_tokens == [CONTEXT.index("The"), CONTEXT.index("mat"), CONTEXT.index("on the rug")]
    for left, right in zip(q3, q3[1:]):  # consecutive windows share doc_stride context tokens
        assert features.offsets[left, 13:15].tolist() == features.offsets[right, 8:10].tolist()
    # "on the rug" is context tokens 10-12: only inside the last window, at positions 8-10
    assert features.inputs["start_positions"][q3].tolist() == [0, 0, 8]
    assert features.inputs["end_positions"][q3].tolist() == [0, 0, 10]
    # "on the mat" (context tokens 3-5) is only whole in the first window
    assert features.inputs["start_positions"][:3].tolist() == [11, 0, 0]


def test_max_train_samples_counts_windows_as_run_qa(squad_file, tokenizer):
    """--max-train-samples N: the first N questions, then at most N of their windows (transformers' run_qa.py);
    evaluation keeps every window of its first N questions."""
    from tasks.train.task import Options, SquadTask

    train_file = squad_file.with_name("train-v2.0.json")
    train_file.write_text(squad_file.read_text(encoding="utf-8"), encoding="utf-8")
    task = SquadTask("squad_v2", squad_file.parent, options=Options(max_seq_length=16, doc_stride=2))
    train = task.load("train", tokenizer, limit=2)
    assert len(train.examples) == 2 and len(train.inputs["input_ids"]) == 2  # 6 windows, 2 kept
    assert train.inputs["input_ids"].tolist() == train.windows.inputs["input_ids"][:2].tolist()
    dev = task.load("dev", tokenizer, limit=2)
    assert len(dev.examples) == 2 and len(dev.inputs["input_ids"]) == 6


def test_features_truncate_long_questions(tokenizer):
    example = SquadExample("q", "", "  where did the cat sit on the mat", CONTEXT, (SquadAnswer("the rug", 39),), False)
    features = squad_features([example], tokenizer, max_seq_length=40, doc_stride=8, max_query_length=4)
    tokens = tokenizer.convert_ids_to_tokens(features.inputs["input_ids"][0].tolist())
    assert tokens[:6] == ["[CLS]", "where", "did", "the", "cat", "[SEP]"]
    assert features.inputs["start_positions"][0] == 6 + 11  # context token 11 ("the" before "rug")


def _logits(features, values):
    """[n, seq] zeros with {(window, position): value} set."""
    logits = np.zeros(features.inputs["input_ids"].shape)
    for (window, position), value in values.items():
        logits[window, position] = value
    return logits


def test_postprocess_span_rules(squad_file, tokenizer):
    examples = read_squad(squad_file)[:2]
    features = squad_features(examples, tokenizer, max_seq_length=32, doc_stride=8)
    # q1: question tokens score highest but are not in the context; (8, 14) "The cat sat on the mat." scores 13
    # but is 7 tokens long; (13, 14) "mat." scores 12; the CLS (null) score is 1 + 1 = 2.
    # q2: best span (13, 13) "mat" scores 2 + 1.5 = 3.5; null score 4 + 4 = 8.
    start = _logits(features, {(0, 3): 9, (0, 8): 6, (0, 13): 5, (0, 11): 3, (0, 0): 1, (1, 0): 4, (1, 13): 2})
    end = _logits(features, {(0, 4): 9, (0, 14): 7, (0, 11): 6.5, (0, 13): 5, (0, 0): 1, (1, 0): 4, (1, 13): 1.5})

    predictions, null_odds = postprocess_squad(examples, features, start, end)
    assert predictions == {"q1": "The cat sat on the mat.", "q2": "mat"}
    assert null_odds == {"q1": 2 - 13, "q2": 8 - 3.5}

    predictions, _ = postprocess_squad(examples, features, start, end, max_answer_length=3, version_2=True)
    assert predictions == {"q1": "mat.", "q2": ""}  # q2: null odds 4.5 > threshold 0

    predictions, _ = postprocess_squad(examples, features, start, end, version_2=True, null_score_diff_threshold=5)
    assert predictions["q2"] == "mat"

    predictions, null_odds = postprocess_squad(examples, features, start, end, n_best=1)
    assert predictions["q1"] == "" and null_odds["q1"] == math.inf  # only question tokens left: no valid span

    with pytest.raises(ValueError, match="logits have shapes"):
        postprocess_squad(examples, features, start[:, :10], end)


def test_postprocess_across_windows(squad_file, tokenizer):
    examples = read_squad(squad_file)[2:]
    features = squad_features(examples, tokenizer, max_seq_length=16, doc_stride=2)
    # windows hold context tokens 0-6, 5-11, 10-13; "rug" (token 12) is at position 10 of the last window
    start = _logits(features, {(0, 8): 2, (2, 8): 3, (0, 0): 1.0, (1, 0): -2.0, (2, 0): 0.5})
    end = _logits(features, {(0, 8): 2, (2, 10): 3, (0, 0): 1.0, (1, 0): -1.0, (2, 0): 0.5})
    predictions, null_odds = postprocess_squad(examples, features, start, end)
    assert predictions == {"q3": "on the rug"}
    assert null_odds == {"q3": -3.0 - 6.0}  # the lowest window null score (window 1) minus the best span score


def test_write_outputs(tmp_path):
    write_squad_outputs(tmp_path / "out", {"q1": "Ünïcode mat", "q2": ""}, {"q1": -1.5, "q2": math.inf})
    assert json.loads((tmp_path / "out" / PREDICTIONS_FILE).read_text("utf-8")) == {"q1": "Ünïcode mat", "q2": ""}
    assert json.loads((tmp_path / "out" / NULL_ODDS_FILE).read_text("utf-8")) == {"q1": -1.5, "q2": math.inf}
    write_squad_outputs(tmp_path / "v1", {"q1": "mat"})
    assert sorted(path.name for path in (tmp_path / "v1").iterdir()) == [PREDICTIONS_FILE]


# ---- official scores ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, normalized",
    [("The  Cat!", "cat"), ("an apple, a pear", "apple pear"), ("Theatre of the absurd.", "theatre of absurd"),
     ("A-ha's  'Take on me'", "ahas take on me"), ("\tthe\n", "")],
)
def test_normalize_answer(text, normalized):
    assert normalize_answer(text) == normalized


def test_token_f1_by_hand():
    assert token_f1("the big red dog", "red dog house") == pytest.approx(2 / 3)  # P = R = 2/3
    assert token_f1("dog dog", "dog") == pytest.approx(2 / 3)  # P = 1/2, R = 1
    assert token_f1("cat", "dog") == 0.0
    assert token_f1("", "the") == 1.0 and token_f1("", "the", both_empty=0.0) == 0.0
    assert token_f1("a", "dog") == 0.0
    assert exact_match("The Mat.", "mat") == 1.0 and exact_match("mats", "mat") == 0.0


def _example(qas_id, *golds):
    return SquadExample(qas_id, "", "?", "", tuple(SquadAnswer(text, 0) for text in golds), not golds)


def test_v1_scores_by_hand():
    examples = [_example("a", "Denver Broncos", "the Broncos"), _example("b", "red dog house"), _example("c", "1990")]
    predictions = {"a": "broncos!", "b": "the big red dog"}  # c is missing and scores 0
    # a: EM 1 (matches "the Broncos"), F1 1; b: EM 0, F1 2/3; c: 0, 0
    assert squad_v1_scores(examples, predictions) == pytest.approx(
        {"exact_match": 100 / 3, "f1": 100 * (1 + 2 / 3) / 3})
    with pytest.raises(ValueError, match="no gold answer"):
        squad_v1_scores([_example("n")], {"n": ""})


V2_EXAMPLES = [_example("a1", "Denver"), _example("a2", "red dog house", "red dog"), _example("n1"), _example("n2")]
V2_PREDICTIONS = {"a1": "denver", "a2": "red cat", "n1": "", "n2": "something"}
# a2 F1: against "red dog house" P 1/2 R 1/3 -> 0.4, against "red dog" P 1/2 R 1/2 -> 0.5; max 0.5


def test_v2_scores_by_hand():
    assert squad_v2_scores(V2_EXAMPLES, V2_PREDICTIONS) == pytest.approx({
        "exact": 50.0, "f1": 100 * (1 + 0.5 + 1 + 0) / 4, "total": 4,
        "HasAns_exact": 50.0, "HasAns_f1": 75.0, "HasAns_total": 2,
        "NoAns_exact": 50.0, "NoAns_f1": 50.0, "NoAns_total": 2})


def test_v2_best_thresholds_by_hand():
    na_probs = {"a1": 0.1, "a2": 0.6, "n1": 0.3, "n2": 0.9}
    scores = squad_v2_scores(V2_EXAMPLES, V2_PREDICTIONS, na_probs)
    # Abstaining everywhere scores 2 (n1, n2). Answering in na_prob order a1, n1, a2, n2:
    # exact 2 -> 3 -> 3 -> 3 -> 2: best 3/4 at 0.1; f1 2 -> 3 -> 3 -> 3.5 -> 2.5: best 3.5/4 at 0.6.
    assert scores["best_exact"] == pytest.approx(75.0) and scores["best_exact_thresh"] == 0.1
    assert scores["best_f1"] == pytest.approx(87.5) and scores["best_f1_thresh"] == 0.6
    # na_prob_thresh 0.5 turns a2 (0.6) and n2 (0.9) into "no answer": exact/f1 1, 0, 1, 1
    thresholded = squad_v2_scores(V2_EXAMPLES, V2_PREDICTIONS, na_probs, na_prob_thresh=0.5)
    assert thresholded["exact"] == pytest.approx(75.0) and thresholded["f1"] == pytest.approx(75.0)
    with pytest.raises(ValueError, match="na_probs lacks 1 question ids"):
        squad_v2_scores(V2_EXAMPLES, V2_PREDICTIONS, {"a1": 0, "a2": 0, "n1": 0})


def test_v2_best_threshold_moves_tied_questions_together():
    examples = [_example("a1", "Denver"), _example("n1"), _example("n2")]
    predictions = {"a1": "Denver", "n1": "", "n2": "wrong"}
    # Abstain everywhere: 2 of 3. At 0.2 n1 joins (+0); at 0.5 a1 (+1) and n2 (-1) join together: still 2.
    # No threshold beats abstaining, so the best stays 2/3 at 0.0.
    scores = squad_v2_scores(examples, predictions, {"a1": 0.5, "n1": 0.2, "n2": 0.5})
    assert scores["best_exact"] == pytest.approx(200 / 3) and scores["best_exact_thresh"] == 0.0


# ---- real XQuAD (a SQuAD v1.1 dev subset) -----------------------------------------------------------


@pytest.fixture(scope="module")
def xquad(request):
    return read_squad(request.getfixturevalue("shared_data")("squad", "xquad.en.json"))


@pytest.mark.realdata
def test_xquad_reader(xquad):
    assert len(xquad) == 1190
    assert len({e.context for e in xquad}) == 240 and len({e.title for e in xquad}) == 48
    assert all(len(e.answers) == 1 and not e.is_impossible for e in xquad)
    assert all(e.context[a.start : a.start + len(a.text)] == a.text for e in xquad for a in e.answers)


@pytest.fixture(params=["wordpiece", "minilm"])
def any_tokenizer(request, make_tokenizer):
    if request.param == "minilm":
        return request.getfixturevalue("minilm_tokenizer")
    return make_tokenizer()  # common words only: most XQuAD words become [UNK], offsets still map them


def _gold_windows(features, index, example):
    """(window, whether the gold answer starts and ends on token boundaries) for windows holding it whole."""
    gold = example.answers[0]
    gold_end = gold.start + len(gold.text)
    found = []
    for window in np.flatnonzero(features.example_index == index):
        spans = features.offsets[window][features.offsets[window, :, 0] >= 0]
        if spans[0, 0] <= gold.start and gold_end <= spans[-1, 1]:
            found.append((window, gold.start in spans[:, 0] and gold_end in spans[:, 1]))
    return found


@pytest.mark.realdata
def test_xquad_windows_recover_gold_answers(xquad, any_tokenizer):
    features = squad_features(xquad, any_tokenizer, max_seq_length=192, doc_stride=64)
    starts, ends, offsets = features.inputs["start_positions"], features.inputs["end_positions"], features.offsets
    assert len(features) > len(xquad)  # several contexts need more than one window
    aligned_examples = 0
    for index, example in enumerate(xquad):
        gold = example.answers[0].text
        holding = _gold_windows(features, index, example)
        assert holding, f"no window holds the answer of {example.qas_id}"
        for window, aligned in holding:
            mapped = example.context[offsets[window, starts[window], 0] : offsets[window, ends[window], 1]]
            assert mapped == gold if aligned else (gold in mapped and mapped != gold)
        others = set(np.flatnonzero(features.example_index == index)) - {window for window, _ in holding}
        assert all(starts[w] == ends[w] == features.cls_index[w] for w in others)
        aligned_examples += any(aligned for _, aligned in holding)
    assert aligned_examples / len(xquad) > 0.99


@pytest.mark.realdata
def test_xquad_perfect_logits_score_full_marks(xquad, any_tokenizer):
    features = squad_features(xquad, any_tokenizer, max_seq_length=192, doc_stride=64)
    starts, ends = features.inputs["start_positions"], features.inputs["end_positions"]
    answered = starts != features.cls_index
    windows = np.arange(len(features))
    start_logits = np.zeros(features.inputs["input_ids"].shape)
    end_logits = np.zeros(features.inputs["input_ids"].shape)
    start_logits[windows[answered], starts[answered]] = 10.0
    end_logits[windows[answered], ends[answered]] = 10.0
    longest = int((ends - starts)[answered].max()) + 1

    predictions, _ = postprocess_squad(xquad, features, start_logits, end_logits, max_answer_length=longest)

    # answers that start and end on token boundaries come back exactly; the others (e.g. gold "2,70" inside
    # the token "2,700") cannot
    aligned = [e for i, e in enumerate(xquad) if any(ok for _, ok in _gold_windows(features, i, e))]
    assert len(aligned) / len(xquad) > 0.99
    assert all(predictions[e.qas_id] == e.answers[0].text for e in aligned)
    assert squad_v1_scores(aligned, predictions) == {"exact_match": 100.0, "f1": 100.0}
    assert squad_v1_scores(xquad, predictions)["exact_match"] >= 100.0 * len(aligned) / len(xquad)
