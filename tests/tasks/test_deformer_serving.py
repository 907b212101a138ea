"""Serving a DeFormer with cached passages (tasks/serve.py, python -m tasks predict): input files, passage
windows, the memory and disk caches, refusals, and cached answers equal to one-shot answers in every backend."""
from __future__ import annotations

import gzip
import json
from types import SimpleNamespace

import numpy as np
import pytest

from backends import FAMILIES
from tasks.__main__ import main
from tasks.data import DataError
from tasks.data.squad import SquadExample, postprocess_squad
from tasks.serve import (MANIFEST_FILE, DiskCache, LRUCache, ModelIdentity, PassageEntry, ServeError, Tokens,
                         joint_features, read_questions)

from ..conftest import BACKENDS
from .conftest import write_wordpiece_vocab
from .test_train_support import one_thread  # noqa: F401  (fixture)

CONTEXT = ("The cat sat on the mat near the door of the old house. The dog sat on the rug in the room. "
           "A man read a book to the children after school, and the teacher wrote a story about the city.")
QUESTIONS = ["Where did the cat sit?", "Where did the dog sit?", "Who read a book?", "What did the teacher write?"]
SQUAD = {"version": "v1.1", "data": [{"title": "Pets", "paragraphs": [
    {"context": CONTEXT, "qas": [{"id": f"q{n}", "question": q, "answers": []} for n, q in enumerate(QUESTIONS)]},
    {"context": "The dog sat on the mat.", "qas": [{"id": "other", "question": "Who sat?", "answers": []}]},
]}]}


def tiny_tokens(tokenizer, max_question_length=12, max_passage_length=16, doc_stride=4, type_vocab_size=2):
    config = SimpleNamespace(max_question_length=max_question_length, type_vocab_size=type_vocab_size)
    return Tokens(tokenizer, config, max_passage_length, doc_stride)


@pytest.fixture
def tokenizer(make_tokenizer):
    return make_tokenizer([CONTEXT, *QUESTIONS])


# ---- input files ----

def test_read_questions_squad_jsonl_and_gzip(tmp_path):
    squad = tmp_path / "dev.json"
    squad.write_text(json.dumps(SQUAD))
    lines = [json.dumps({"context": CONTEXT, "question": q, "id": f"q{n}"}) for n, q in enumerate(QUESTIONS)]
    jsonl = tmp_path / "questions.jsonl.gz"
    jsonl.write_bytes(gzip.compress(("\n".join(lines) + "\n\n").encode()))
    from_squad, from_jsonl = read_questions(squad), read_questions(jsonl)
    assert [(e.qas_id, e.question, e.context) for e in from_squad[:4]] == \
        [(e.qas_id, e.question, e.context) for e in from_jsonl]
    assert from_squad[-1].qas_id == "other"


@pytest.mark.parametrize("record, message", [
    ({"question": "q", "id": "a"}, "questions.jsonl:2: missing key 'context'"),
    ({"context": "  ", "question": "q", "id": "a"}, "questions.jsonl:2: the context is empty"),
    ({"context": "c", "question": 3, "id": "a"}, "questions.jsonl:2.question: the question must be a string"),
    ({"context": "c", "question": "q", "id": "first"}, "questions.jsonl:2: missing or duplicate id 'first'"),
    ([1, 2], "questions.jsonl:2: a JSONL record"),
])
def test_read_questions_names_the_bad_line(tmp_path, record, message):
    path = tmp_path / "questions.jsonl"
    path.write_text(json.dumps({"context": "c", "question": "q", "id": "first"}) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_questions(path)


# ---- tokens: question and passage apart ----

def test_passage_windows_are_the_pair_template_cut_after_the_question(tokenizer):
    tokens = tiny_tokens(tokenizer)
    windows = tokens.passage(CONTEXT)
    content = tokenizer(CONTEXT, add_special_tokens=False, return_offsets_mapping=True)
    assert len(content["input_ids"]) > 14 and len(windows) > 1  # the passage needs several windows
    seen = []
    for w in range(len(windows)):
        ids = windows.input_ids[w][windows.attention_mask[w] == 1].tolist()
        assert ids[-1] == tokenizer.sep_token_id and tokenizer.cls_token_id not in ids  # "p [SEP]"
        assert len(ids) <= 16
        spans = windows.offsets[w][windows.offsets[w, :, 0] >= 0]
        assert len(spans) == len(ids) - 1
        seen.append([tuple(s) for s in spans.tolist()])
    # consecutive windows share doc_stride tokens, and together they cover the passage in order
    assert all(a[-4:] == b[:4] for a, b in zip(seen, seen[1:]))
    covered = [span for n, window in enumerate(seen) for span in (window if n == 0 else window[4:])]
    assert covered == [tuple(s) for s in content["offset_mapping"]]
    assert set(windows.token_type_ids[windows.attention_mask == 1].tolist()) == {1}
    assert set(tiny_tokens(tokenizer, type_vocab_size=1).passage(CONTEXT).token_type_ids.ravel().tolist()) == {0}


def test_questions_padded_and_too_long_refused(tokenizer):
    tokens = tiny_tokens(tokenizer, max_question_length=8)
    arrays = tokens.questions(QUESTIONS[:2])
    assert arrays["question_input_ids"][:, 0].tolist() == [tokenizer.cls_token_id] * 2
    assert arrays["question_attention_mask"].sum(1).tolist() == [8, 8]  # [CLS] where did the cat sit ? [SEP]
    assert not arrays["question_token_type_ids"].any()
    with pytest.raises(ServeError, match="question 'long' has 11 tokens with its special tokens; the model's "
                                         "max_question_length is 8"):
        tokens.questions(["Where did the cat sit on the mat?", "Where?"], ["long", "short"])


def test_empty_passage_and_bad_windows_refused(tokenizer):
    with pytest.raises(ServeError, match="the passage is empty"):
        tiny_tokens(tokenizer).passage(" \n")
    with pytest.raises(ServeError, match="--doc-stride 15 must be at least 0 and less than the 15 passage tokens"):
        tiny_tokens(tokenizer, doc_stride=15)


def test_joint_features_decode_spans_of_any_window(tokenizer):
    """postprocess_squad over [question; window] rows: the best span of the second window, in passage text."""
    tokens = tiny_tokens(tokenizer)
    windows, questions = tokens.passage(CONTEXT), tokens.questions(QUESTIONS[:1])
    rows_w = np.arange(len(windows))
    rows_q = np.zeros_like(rows_w)
    features = joint_features(questions, windows, rows_q, rows_w, rows_q)
    tq = questions["question_input_ids"].shape[1]
    start, end = np.zeros(features.inputs["input_ids"].shape), np.zeros(features.inputs["input_ids"].shape)
    start[1, tq + 2], end[1, tq + 4] = 5.0, 5.0  # the window's 2nd..4th passage tokens (after no prefix)
    example = SquadExample("q", "", QUESTIONS[0], CONTEXT, (), False)
    answers, odds = postprocess_squad([example], features, start, end)
    a, b = windows.offsets[1, 2, 0], windows.offsets[1, 4, 1]
    assert answers == {"q": CONTEXT[a:b]} and odds["q"] == -10.0


# ---- the caches ----

def entry_of(key: str, size: int, passage: str = "p") -> PassageEntry:
    windows = SimpleNamespace(arrays=lambda: {})
    return PassageEntry(key, passage, windows, [np.zeros(size, np.uint8)])


def test_lru_drops_least_recently_used_beyond_the_bound():
    cache = LRUCache(max_bytes=100)
    for key in "abc":
        cache.put(key, entry_of(key, 40))
    assert list(cache.entries) == ["b", "c"] and cache.total == 80
    cache.get("b")
    cache.put("d", entry_of("d", 40))
    assert list(cache.entries) == ["b", "d"]
    cache.put("huge", entry_of("huge", 101))  # larger than the bound alone: used, not kept
    assert "huge" not in cache and list(cache.entries) == ["b", "d"]
    assert LRUCache(0).put("a", entry_of("a", 1)) is None


def identity(fingerprint: str, name: str = "runs/deformer-a") -> ModelIdentity:
    return ModelIdentity(name, "0/2/1", "float64", fingerprint * 16)


def test_disk_cache_round_trip_and_refusals(tokenizer, tmp_path):
    windows = tiny_tokens(tokenizer).passage(CONTEXT)
    states = [np.random.default_rng(n).standard_normal((*windows.input_ids.shape, 4)) for n in range(3)]
    folder = tmp_path / "cache"
    disk = DiskCache(folder, identity("a"))
    assert not folder.exists()  # nothing written before the first entry
    disk.save(PassageEntry("k1", CONTEXT, windows, states))
    assert sorted(p.name for p in folder.iterdir()) == [MANIFEST_FILE, "k1.safetensors"]
    loaded = DiskCache(folder, identity("a")).load("k1", CONTEXT, 3)
    assert loaded.source == "disk" and loaded.passage == CONTEXT
    assert all(np.array_equal(a, b) for a, b in zip(loaded.states, states))
    assert all(np.array_equal(a, b) for a, b in zip(loaded.windows.arrays().values(), windows.arrays().values()))
    assert DiskCache(folder, identity("a")).load("k2", CONTEXT, 3) is None
    with pytest.raises(ServeError, match="cache holds passages encoded by runs/deformer-a \\(split 0/2/1, float64, "
                                         "fingerprint aaaaaaaaaaaa\\), not by runs/deformer-b \\(split 0/2/1, "
                                         "float64, fingerprint bbbbbbbbbbbb\\)"):
        DiskCache(folder, identity("b", "runs/deformer-b"))
    # a file of model a copied into model b's folder is refused when read
    other = tmp_path / "other"
    DiskCache(other, identity("b")).save(PassageEntry("k0", CONTEXT, windows, states))
    (other / "k1.safetensors").write_bytes((folder / "k1.safetensors").read_bytes())
    with pytest.raises(ServeError, match="k1.safetensors holds passages encoded by .*fingerprint aaaa.*not by "
                                         ".*fingerprint bbbb"):
        DiskCache(other, identity("b")).load("k1", CONTEXT, 3)
    with pytest.raises(Exception, match="k1.safetensors: holds passage_states.3 unexpectedly or lacks them"):
        DiskCache(folder, identity("a")).load("k1", CONTEXT, 4)
    assert not list(folder.glob(".*partial*")) and not list(other.glob(".*partial*"))


# ---- python -m tasks predict: bad input before any model ----

def run(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("content, message", [
    ('{"context": "", "question": "q", "id": "a"}\n', "questions.jsonl:1: the context is empty"),
    ('{"context": "c", "question": "q"}\n', "questions.jsonl:1: missing key 'id'"),
    ("", "questions.jsonl: holds no questions"),
])
def test_cli_bad_input_file(capsys, tmp_path, content, message):
    path = tmp_path / "questions.jsonl"
    path.write_text(content)
    code, err = run(capsys, "predict", "--model", tmp_path / "no-model", "--backend", BACKENDS[0], "--input", path,
                    "--output", tmp_path / "out.json", "--cache-passages")
    assert code == 2 and err.strip().splitlines() == [f"python -m tasks predict: error: {path.parent}/{message}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["questions.jsonl"]


# ---- with the model: a tiny seeded DeFormer in every backend ----

needs_deformer = pytest.mark.skipif("deformer" not in FAMILIES, reason="backends/deformer is not here")
