"""`python -m tasks augment`: the rules' rates (framework-free), determinism, resume, the TinyBERT candidates, bad
input, and `tasks distill` reading the stored teacher logits."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from backends import family
from tasks import augment as augment_module
from tasks.__main__ import main
from tasks.data.augment import (LOGITS_SUFFIX, METHODS, example_rng, nearest_words, tang_samples, tinybert_draws,
                                tinybert_samples, top_candidates, whole_word_tokens)
from tasks.data.features import load_tokenizer
from tasks.data.glue import read_glue_file
from tasks.train.model import ModelSource, save_model

from ..conftest import BACKENDS
from .conftest import write_wordpiece_vocab
from .test_train_support import one_thread  # noqa: F401  (fixture)
from .test_train_support import tiny_config, write_model_folder

pytestmark = pytest.mark.usefixtures("one_thread")
BACKEND = BACKENDS[0]
# sentences of the vocabulary's words, and three words it holds only as two pieces (cat ##s, dog ##s, book ##ed)
POSITIVE, NEGATIVE = ("good", "great", "nice"), ("bad", "poor", "sad")
FILLER = "the man saw a dog and the cat sat on the mat with cats dogs booked".split()


# ---- the rules, framework-free ----

def test_tang_rates_on_many_draws():
    """p_mask 0.1 per word; p_ng 0.25 per sample with n uniform in 1..5 (the POS band leaves words unchanged)."""
    rules, rng = METHODS["tang"], np.random.default_rng(0)
    words = [f"w{i}" for i in range(12)]
    samples = tang_samples(words, rules, rng, "[MASK]", samples=20000)
    whole = [s for s in samples if len(s) == len(words)]
    cut = [s for s in samples if len(s) < len(words)]
    masked = sum(w == "[MASK]" for s in whole for w in s) / sum(map(len, whole))
    assert abs(masked - rules.p_mask) < 0.005
    assert abs(len(cut) / len(samples) - rules.p_ngram) < 0.01
    lengths = np.bincount([len(s) for s in cut], minlength=6)[1:]
    np.testing.assert_allclose(lengths / len(cut), 0.2, atol=0.02)
    for sample in cut:  # an n-gram: consecutive words of the example, masked ones included
        first = next((int(w[1:]) for w in sample if w != "[MASK]"), None)
        if first is not None:
            start = first - sample.index(f"w{first}")
            assert all(w in ("[MASK]", f"w{start + j}") for j, w in enumerate(sample))


def test_tinybert_rates_on_many_draws():
    """p_t 0.4 per word; the candidate drawn uniformly from the word's list; a word without candidates stays."""
    rules, rng = METHODS["tinybert"], np.random.default_rng(1)
    words = ["a", "b", "c", "d"]
    candidates = [[f"a{j}" for j in range(15)], [f"b{j}" for j in range(3)], [], ["d0"]]
    samples = tinybert_samples(words, candidates, rules, rng, samples=20000)
    for i, word in enumerate(words):
        replaced = [s[i] for s in samples if s[i] != word]
        expected = rules.p_replace if candidates[i] else 0.0
        assert abs(len(replaced) / len(samples) - expected) < 0.01
        if candidates[i]:
            counts = np.array([replaced.count(c) for c in candidates[i]]) / len(replaced)
            np.testing.assert_allclose(counts, 1 / len(candidates[i]), atol=0.02)
    replace, pick = tinybert_draws(4, rules, example_rng(7, 3), samples=5)
    again = tinybert_draws(4, rules, example_rng(7, 3), samples=5)
    assert (replace == again[0]).all() and (pick == again[1]).all()  # one seeded generator per example


def test_nearest_words_and_top_candidates_match_brute_force():
    rng = np.random.default_rng(2)
    embeddings, queries = rng.normal(size=(50, 6)), rng.normal(size=(3, 6))
    allowed = rng.random(50) < 0.6
    got = nearest_words(queries, embeddings, allowed, 4)
    for query, ids in zip(queries, got):
        cosine = embeddings @ query / np.linalg.norm(embeddings, axis=1) / np.linalg.norm(query)
        expected = [i for i in np.argsort(-cosine) if allowed[i]][:4]
        assert list(ids) == expected
    logits = rng.normal(size=50)
    top = np.argsort(-logits)[:15]
    assert list(top_candidates(logits, allowed, 15)) == [i for i in top if allowed[i]]


def test_whole_word_tokens_exclude_pieces_and_specials(tmp_path):
    tokenizer = load_tokenizer(write_wordpiece_vocab(tmp_path, ["cat dog"]))
    allowed = whole_word_tokens(tokenizer)
    words = set(tokenizer.convert_ids_to_tokens(np.flatnonzero(allowed).tolist()))
    assert {"cat", "dog", "the"} <= words
    assert not any(w.startswith("##") or w.startswith("[") or not w.isalpha() for w in words)


# ---- the command ----

def seeded_folder(folder, head: str, **changes):
    """A tiny BERT with seeded weights for `head` (a fine-tuned teacher's stand-in, or a masked LM), its vocab the
    test's words (cats, dogs, booked: two pieces each)."""
    write_wordpiece_vocab(folder, [" ".join(POSITIVE + NEGATIVE + tuple(FILLER[:12]))])
    vocab = len((folder / "vocab.txt").read_text().split())
    config = tiny_config("bert", vocab_size=vocab + 4, num_hidden_layers=2, **changes)
    params = family("bert").init_params(config, head, np.random.default_rng(3))
    save_model(folder, ModelSource("bert", config, head, params), params)
    return folder


def write_sst2(folder, rows: int = 12):
    rng = np.random.default_rng(4)
    lines = ["sentence\tlabel"]
    for i in range(rows):
        label = i % 2
        words = list(rng.choice(FILLER, 5)) + [str(rng.choice(POSITIVE if label else NEGATIVE))]
        lines.append(" ".join(rng.permutation(words)) + f"\t{label}")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.tsv").write_text("\n".join(lines) + "\n")
    (folder / "dev.tsv").write_text("\n".join(lines[:7]) + "\n")
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("augment")
    return {"data": write_sst2(root / "data"), "teacher": seeded_folder(root / "teacher", "seqcls", num_labels=2),
            "mlm": seeded_folder(root / "mlm", "mlm"), "root": root}


def augment(folders, output, *extra, method="tang", teacher=None):
    return main(["augment", "--task", "sst-2", "--data-dir", str(folders["data"]), "--teacher",
                 str(teacher or folders["teacher"]), "--backend", BACKEND, "--method", method, "--n-iter", "6",
                 "--seed", "5", "--output-dir", str(output), "--max-seq-length", "24", "--batch-size", "8",
                 "--no-progress", *extra])


def files(output) -> tuple[bytes, bytes]:
    return (output / "train.tsv").read_bytes(), (output / ("train.tsv" + LOGITS_SUFFIX)).read_bytes()


@pytest.mark.parametrize("method,extra", [("tang", []), ("tinybert", ["--mlm-model"])])
def test_augment_writes_originals_then_samples_deterministically(folders, method, extra, tmp_path, capsys):
    extra = [*extra, str(folders["mlm"])] if extra else []
    assert augment(folders, tmp_path / "b", *extra, method=method) == 0
    capsys.readouterr()
    assert augment(folders, tmp_path / "a", *extra, method=method) == 0
    assert files(tmp_path / "a") == files(tmp_path / "b")  # the same command writes the same bytes
    rows = read_glue_file(tmp_path / "a" / "train.tsv", "sst-2")
    originals = read_glue_file(folders["data"] / "train.tsv", "sst-2")
    assert [(r.text_a, r.label) for r in rows[:len(originals)]] == [(r.text_a, r.label) for r in originals]
    augmented = rows[len(originals):]
    assert len(augmented) > len(originals)
    texts = [r.text_a for r in rows]
    assert len(set(texts)) == len(texts)  # duplicates removed
    from backends.tensorfile import SafetensorsReader
    reader = SafetensorsReader(tmp_path / "a" / ("train.tsv" + LOGITS_SUFFIX))
    assert reader.shape("logits") == (len(rows), 2)
    assert not (tmp_path / "a" / augment_module.WORK_DIR).exists()
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"] == len(rows) and summary["original_rows"] == len(originals)
    if method == "tang":
        assert any("[MASK]" in t for t in texts[len(originals):])
        assert any(len(t.split()) < 6 for t in texts[len(originals):])  # n-grams
    else:  # replacements are whole words of the vocabulary; "cats"/"dogs"/"booked" got embedding neighbours
        vocab = set((folders["mlm"] / "vocab.txt").read_text().split())
        for row in augmented:
            assert all(w in vocab or w in FILLER for w in row.text_a.split())
        assert sum(row.text_a != original.text_a for row, original in zip(augmented, originals)) > 0


def test_resume_equals_one_shot(folders, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(augment_module, "ORIGINAL_CHUNK", 5)
    monkeypatch.setattr(augment_module, "AUGMENT_CHUNK", 3)
    assert augment(folders, tmp_path / "one") == 0
    commit, calls = augment_module.Work.commit, []

    def interrupted(self, rows, logits):
        calls.append(1)
        if len(calls) == 4:  # the 2 original chunks and 1 augmented chunk committed
            raise KeyboardInterrupt
        commit(self, rows, logits)

    monkeypatch.setattr(augment_module.Work, "commit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        augment(folders, tmp_path / "two")
    assert not (tmp_path / "two" / "train.tsv").exists()  # nothing under the final names
    monkeypatch.setattr(augment_module.Work, "commit", commit)
    capsys.readouterr()
    assert augment(folders, tmp_path / "two", "--n-iter", "5") == 2  # another run's unfinished work: refused
    assert "unfinished run of other settings (rules)" in capsys.readouterr().err
    assert augment(folders, tmp_path / "two") == 0
    assert "resuming" in capsys.readouterr().err
    assert files(tmp_path / "two") == files(tmp_path / "one")
    assert augment(folders, tmp_path / "other", "--seed", "6") == 0
    assert files(tmp_path / "other")[0] != files(tmp_path / "one")[0]


def distill(folders, train_file, output, *extra):
    student = folders["root"] / "bilstm"
    if not student.exists():
        write_model_folder(student, "bilstm")
    code = main(["distill", "--task", "sst-2", "--teacher", str(folders["teacher"]), "--student", str(student),
                 "--tokenizer", str(folders["teacher"]), "--backend", BACKEND, "--data-dir", str(folders["data"]),
                 "--train-file", str(train_file), "--output-dir", str(output), "--do-train", "--epochs", "1",
                 "--batch-size", "8", "--learning-rate", "1e-3", "--max-seq-length", "24", "--dtype", "float64",
                 "--soft-loss", "mse", "--alpha", "1", "--no-progress", *extra])
    return code


def test_distill_reads_the_stored_logits(folders, tmp_path, capsys):
    """float64: a student distilled from the stored logits equals one distilled from the live teacher."""
    assert augment(folders, tmp_path / "set", "--dtype", "float64") == 0
    live = tmp_path / "live"
    live.mkdir()
    shutil.copy(tmp_path / "set" / "train.tsv", live / "train.tsv")  # the rows without their logits
    capsys.readouterr()
    assert distill(folders, tmp_path / "set" / "train.tsv", tmp_path / "stored-run") == 0
    assert "logits are read from" in capsys.readouterr().err
    assert distill(folders, live / "train.tsv", tmp_path / "live-run") == 0
    histories = [np.array([e["loss"] for e in json.loads((tmp_path / run / "trainer_state.json").read_text())
                           ["log_history"] if "loss" in e]) for run in ("stored-run", "live-run")]
    assert len(histories[0]) > 0
    np.testing.assert_allclose(histories[0], histories[1], rtol=0, atol=1e-10)
    from backends.tensorfile import SafetensorsReader
    weights = [SafetensorsReader(tmp_path / run / "model.safetensors") for run in ("stored-run", "live-run")]
    for name in weights[0]:
        np.testing.assert_allclose(weights[0][name], weights[1][name], rtol=0, atol=1e-10, err_msg=name)
    # rows changed after augment wrote the logits: refused, naming the file
    with open(tmp_path / "set" / "train.tsv", "a") as handle:
        handle.write("the cat sat\t1\n")
    assert distill(folders, tmp_path / "set" / "train.tsv", tmp_path / "changed-run") == 2
    assert "teacher-logits.safetensors: its logits were written for other rows" in capsys.readouterr().err


def test_bad_input_is_one_line_and_writes_nothing(folders, tmp_path, capsys):
    out = tmp_path / "out"

    def refused(*args, **kwargs):
        before = (out / "train.tsv").exists() and files(out)
        capsys.readouterr()
        assert augment(folders, out, *args, **kwargs) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "Traceback" not in err
        assert not (out / augment_module.WORK_DIR).exists()
        assert before == ((out / "train.tsv").exists() and files(out))  # nothing written or changed
        return err

    assert "invalid choice: 'eda'" in refused("--method", "eda")
    for task, message in (("nope", "unknown task 'nope'"), ("squad", "augment writes GLUE transfer sets")):
        assert main(["augment", "--task", task, "--data-dir", str(folders["data"]), "--teacher",
                     str(folders["teacher"]), "--backend", BACKEND, "--method", "tang", "--output-dir", str(out)]) == 2
        assert message in capsys.readouterr().err
    assert "neither a preset nor a folder" in refused(teacher=tmp_path / "missing")
    assert "the MLM head is missing" in refused(method="tinybert")  # the seqcls teacher as masked LM
    assert "--n-iter must be positive" in refused("--n-iter", "0")
    assert augment(folders, out) == 0
    assert "already exist; use --overwrite-output-dir" in refused()
    assert augment(folders, out, "--overwrite-output-dir") == 0
