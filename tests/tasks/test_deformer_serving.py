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


def tiny_tokens(tokenizer, max_question_length=12, max_seq_length=16, doc_stride=4):
    return Tokens(tokenizer, max_question_length, max_seq_length, doc_stride)


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
    assert set(windows.token_type_ids[windows.attention_mask == 1].tolist()) == {1}  # the pair's second text


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
    with pytest.raises(ServeError, match="--doc-stride 15 must be at least 0 and less than the 15 passage tokens "
                                         "of a window \\(--max-seq-length 16\\)"):
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


def errors(err: str) -> list[str]:
    """stderr's lines but the notes (a model folder without weights notes its fresh parameters)."""
    return [line for line in err.strip().splitlines() if not line.startswith("note: ")]


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

LONG_QUESTION = "Where did the cat sit on the mat near the door of the old house?"  # 18 tokens with [CLS] [SEP]


def write_deformer_folder(folder, base="bert", split=(1, 2, 1), max_question_length=12):
    """config.json of a tiny 4-layer DeFormer (no weights: the seeded numpy init) and a vocab.txt for the texts."""
    from backends.deformer.config import from_base_config
    from .test_train_support import tiny_config

    write_wordpiece_vocab(folder, [CONTEXT, *QUESTIONS, LONG_QUESTION])
    vocab = len((folder / "vocab.txt").read_text().split())
    # type_vocab_size 2: the WordPiece tokenizer gives the passage token type 1 (RoBERTa's own has one type)
    base_config = tiny_config(base, vocab_size=vocab + 4, num_hidden_layers=sum(split), type_vocab_size=2)
    config = from_base_config(base_config, *split, max_question_length=max_question_length)
    (folder / "config.json").write_text(json.dumps(config.to_dict()))
    return folder


def server_of(folder, backend, **options):
    from tasks.serve import PassageServer

    return PassageServer(folder, backend, dtype="float64", max_seq_length=16, doc_stride=4, **options)


@needs_deformer
@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("base, split", [("bert", (1, 2, 1)), ("roberta", (0, 3, 1)), ("bert", (2, 0, 2))])
def test_cached_logits_equal_one_shot(backend, tmp_path, base, split):
    """float64: the questions against the passage's cached states give the full model's logits (<= 1e-10), in
    every window (the passage needs several), and the same answers."""
    server = server_of(write_deformer_folder(tmp_path / "model", base, split), backend, batch_size=5)
    entry, = server.encode_passages([CONTEXT])
    assert len(entry.windows) > 1 and len(entry.states) == split[0] + split[1] + 1
    cached_features, *cached = server.logits_with_cache(entry, QUESTIONS)
    features, *one_shot = server.logits_one_shot(CONTEXT, QUESTIONS)
    assert np.array_equal(cached_features.offsets, features.offsets)
    for a, b in zip(cached, one_shot):
        assert a.shape == b.shape == features.offsets.shape[:2] and a.dtype == np.float64
        assert np.max(np.abs(a - b)) <= 1e-10
    examples = [SquadExample(str(n), "", q, CONTEXT, (), False) for n, q in enumerate(QUESTIONS)]
    answers, null_odds = server.answer_with_cache(entry, QUESTIONS)
    assert (answers, null_odds) == postprocess_squad(examples, features, *one_shot)
    assert all(answer and answer in CONTEXT for answer in answers.values())
    assert server.answer(CONTEXT, QUESTIONS[1:2]) == [answers["1"]]
    assert server.counts == {"memory": 1, "disk": 0, "computed": 1}  # answer() found the passage encoded


@needs_deformer
@pytest.mark.usefixtures("one_thread")
def test_each_window_goes_to_the_model_once_for_all_its_questions(backend, tmp_path):
    """One forward pass per window for the 4 questions: its cache holds that window's states alone ([1, Tp, H]:
    the folded assist layers project its keys and values once and attend over no other window's), passage_index
    zeros, no per-layer outputs."""
    server = server_of(write_deformer_folder(tmp_path / "model"), backend, batch_size=64)
    entry, = server.encode_passages([CONTEXT])
    model, calls = server.runner.model, []

    def spy(**inputs):
        outputs = model(**inputs)
        calls.append((inputs, set(outputs)))
        return outputs

    server.runner.model = spy
    server.logits_with_cache(entry, QUESTIONS)
    windows, adapter = len(entry.windows), server.adapter
    assert windows > 1 and len(calls) == windows
    for window, (inputs, outputs) in enumerate(calls):
        assert inputs["output_layers"] is False
        assert outputs == {"start_logits", "end_logits", "last_hidden_state"}
        cache = inputs["passage_cache"]
        for state, cached in zip(entry.states, cache["passage_states"], strict=True):
            assert np.array_equal(adapter.to_numpy(cached), state[window:window + 1])
        assert adapter.to_numpy(cache["passage_index"]).tolist() == [0] * len(QUESTIONS)


@needs_deformer
@pytest.mark.usefixtures("one_thread")
def test_cli_predict_cache_dir_reused_and_refused_for_another_model(capsys, tmp_path):
    backend = BACKENDS[0]
    model, other = write_deformer_folder(tmp_path / "model"), write_deformer_folder(tmp_path / "other", split=(0, 3, 1))
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps({"context": CONTEXT if n < 3 else CONTEXT[:60], "question": q,
                                             "id": f"q{n}"}) + "\n" for n, q in enumerate(QUESTIONS)))
    cache = tmp_path / "cache"
    common = ["predict", "--backend", backend, "--dtype", "float64", "--max-seq-length", 16, "--doc-stride", 4,
              "--input"]
    outputs = {}
    for name, extra in (("first", ["--cache-passages", "--cache-dir", cache]),
                        ("again", ["--cache-passages", "--cache-dir", cache]), ("one-shot", [])):
        code, err = run(capsys, *common, questions, "--model", model, "--output", tmp_path / f"{name}.json", *extra)
        assert code == 0, err
        outputs[name] = json.loads((tmp_path / f"{name}.json").read_text())
    assert outputs["first"] == outputs["again"] == outputs["one-shot"] and sorted(outputs["first"]) == \
        ["q0", "q1", "q2", "q3"]
    assert len(list(cache.glob("*.safetensors"))) == 2  # two passages
    files = sorted(p.name for p in tmp_path.iterdir())
    # another model's run on that cache folder: refused in one line naming both, nothing written
    code, err = run(capsys, *common, questions, "--model", other, "--output", tmp_path / "refused.json",
                    "--cache-passages",
                    "--cache-dir", cache)
    assert code == 2 and len(errors(err)) == 1, err
    assert f"holds passages encoded by {model} (split 1/2/1, float64" in err and f"not by {other} (split 0/3/1" in err
    # a question longer than the model takes, and an empty passage: refused before any work, nothing written
    long = tmp_path / "long.jsonl"
    long.write_text(json.dumps({"context": CONTEXT, "question": LONG_QUESTION, "id": "long"}) + "\n")
    code, err = run(capsys, *common, long, "--model", model, "--output", tmp_path / "long.json", "--cache-passages")
    assert code == 2 and errors(err) == [
        f"python -m tasks predict: error: {long}: question 'long' has 18 tokens with its special tokens; the "
        "model's max_question_length is 12"]
    empty = tmp_path / "empty.jsonl"  # no tokens: the tokenizer drops control characters
    empty.write_text(json.dumps({"context": "\u0000\u0001", "question": "Who?", "id": "e"}) + "\n")
    code, err = run(capsys, *common, empty, "--model", model, "--output", tmp_path / "empty.json", "--cache-passages")
    assert code == 2 and errors(err) == [
        f"python -m tasks predict: error: {empty}: question 'e': the passage is empty (no tokens)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*files, "long.jsonl", "empty.jsonl"])
    assert len(list(cache.glob("*.safetensors"))) == 2 and not list(cache.glob(".*"))


@needs_deformer
@pytest.mark.usefixtures("one_thread")
def test_predict_answers_are_tasks_evaluate_predictions(capsys, tmp_path):
    """`tasks predict --cache-passages` on a SQuAD file writes what `tasks evaluate` writes as predictions.json."""
    backend = BACKENDS[0]
    model = write_deformer_folder(tmp_path / "model")
    data = json.loads(json.dumps(SQUAD))
    for paragraph in data["data"][0]["paragraphs"]:
        for qa in paragraph["qas"]:
            qa["answers"] = [{"text": paragraph["context"].split()[1], "answer_start": 4}]
    squad = tmp_path / "dev-v1.1.json"
    squad.write_text(json.dumps(data))
    settings = ["--backend", backend, "--model", model, "--dtype", "float64", "--max-seq-length", 16,
                "--doc-stride", 4]
    code, err = run(capsys, "evaluate", "--task", "squad", "--validation-file", squad, "--output-dir",
                    tmp_path / "eval", "--no-progress", *settings)
    assert code == 0, err
    code, err = run(capsys, "predict", "--input", squad, "--output", tmp_path / "predict.json", "--cache-passages",
                    *settings)
    assert code == 0, err
    assert json.loads((tmp_path / "predict.json").read_text()) == \
        json.loads((tmp_path / "eval" / "eval" / "predictions.json").read_text())
