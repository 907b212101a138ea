"""Masked language modelling (--task mlm): the numpy masking, text features, the loss and perplexity, the CLI in
every backend, float64 training parity, resume, and the one-line errors."""
from __future__ import annotations

import gzip
import json
import shutil

import numpy as np
import pytest

from backends.tensorfile import SafetensorsReader
from tasks.__main__ import main
from tasks.data.files import DataError
from tasks.data.masking import IGNORE_INDEX, Masking, eval_rng, mask_rows, spread_to_words, train_rng, word_starts
from tasks.data.text import main as text_main
from tasks.data.text import read_lines, squad_contexts, text_features
from tasks.metrics import masked_lm_losses, masked_lm_metrics

from ..conftest import BACKENDS
from .test_tasks_features import write_byte_level_bpe
from .test_train_support import CONTEXT, one_thread  # noqa: F401  (one_thread: fixture)
from .test_train_support import max_weight_diff, tiny_config, write_model_folder

MASK_ID, VOCAB = 4, 1000
LINES = [CONTEXT, "The man saw a dog and the cat sat on the mat .", "The children read a book in the school .",
         "The dog ran to the city with the man .", "A woman told the children a story about the world ."]


def masking_inputs(rows=400, seq=128, seed=0):
    """Token ids in [5, VOCAB) (never the mask id), a maskable pattern with special tokens at both ends and
    padding after a random length."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, VOCAB, (rows, seq))
    lengths = rng.integers(3, seq + 1, rows)
    maskable = np.arange(seq)[None, :] < lengths[:, None] - 1
    maskable[:, 0] = False  # [CLS]; the last real position is [SEP]
    return ids, maskable


# ---- the masking ------------------------------------------------------------------------------------


def test_masking_statistics_are_transformers_80_10_10():
    ids, maskable = masking_inputs()
    masked, labels = Masking(MASK_ID, VOCAB).apply(ids, maskable, train_rng(42, 0, 0))
    selected = labels != IGNORE_INDEX
    assert selected.sum() / maskable.sum() == pytest.approx(0.15, abs=0.006)
    assert (labels[selected] == ids[selected]).all()  # labels hold the original ids
    assert not selected[~maskable].any() and (masked[~maskable] == ids[~maskable]).all()  # specials, padding
    assert (masked[~selected] == ids[~selected]).all()  # only selected tokens change
    replaced = (masked == MASK_ID)[selected].mean()
    unchanged = (masked == ids)[selected].mean()
    randomised = ((masked != MASK_ID) & (masked != ids))[selected].mean()
    assert replaced == pytest.approx(0.8, abs=0.015)
    assert unchanged == pytest.approx(0.1 + 0.1 / VOCAB, abs=0.01)  # a random token can be the original one
    assert randomised == pytest.approx(0.1, abs=0.01)
    assert ids.dtype == masked.dtype == labels.dtype == np.int64
    other = Masking(MASK_ID, VOCAB, probability=0.3).apply(ids, maskable, train_rng(42, 0, 0))[1]
    assert (other != IGNORE_INDEX).sum() / maskable.sum() == pytest.approx(0.3, abs=0.008)


def test_masking_is_seeded_by_seed_update_and_micro_batch():
    ids, maskable = masking_inputs(rows=8, seq=32)
    masking = Masking(MASK_ID, VOCAB)
    first = masking.apply(ids, maskable, train_rng(42, 3, 1))
    again = masking.apply(ids.copy(), maskable, train_rng(42, 3, 1))
    assert all((a == b).all() for a, b in zip(first, again))
    for other in (train_rng(43, 3, 1), train_rng(42, 4, 1), train_rng(42, 3, 0)):
        assert not (masking.apply(ids, maskable, other)[1] == first[1]).all()
    # the validation masking: row i from its own index, whatever the rows around it
    rows, labels = mask_rows(masking, ids, maskable)
    assert (mask_rows(masking, ids[:3], maskable[:3])[1] == labels[:3]).all()
    assert (masking.apply(ids[5:6], maskable[5:6], eval_rng(5))[1] == labels[5:6]).all()


def test_bad_probability_is_refused():
    for probability in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="probability"):
            Masking(MASK_ID, VOCAB, probability=probability)


def test_whole_word_masking_masks_every_piece_of_a_chosen_word(make_tokenizer):
    tokenizer = make_tokenizer(["play jump walk don t stop"])
    text = "the children played and jumped , then walked home . don't stop"
    features = text_features([text] * 300, tokenizer, 24, line_by_line=True, whole_word=True, path="t.txt")
    tokens = tokenizer.convert_ids_to_tokens(features["input_ids"][0])
    starts = features["word_starts"][0]
    # pieces ("play", "##ed") form one word; "don", "'", "t" too (no gap between them), as transformers groups them
    assert [t for t, s in zip(tokens, starts) if s] == ["the", "children", "play", "and", "jump", ",", "then",
                                                        "walk", "home", ".", "don", "stop"]
    masking = Masking(tokenizer.mask_token_id, len(tokenizer), whole_word=True)
    masked, labels = masking.apply(features["input_ids"], features["maskable"], train_rng(0, 0, 0),
                                   features["word_starts"])
    selected = labels != IGNORE_INDEX
    word = np.cumsum(features["word_starts"], axis=1)  # word number of each piece
    for row in range(len(labels)):
        for w in np.unique(word[row][features["maskable"][row]]):
            pieces = selected[row][(word[row] == w) & features["maskable"][row]]
            assert pieces.all() or not pieces.any()  # a word is masked whole or not at all
    assert not selected[~features["maskable"]].any()
    chosen_words = sum(len(np.unique(word[r][selected[r]])) for r in range(len(labels)))
    assert chosen_words / features["word_starts"].sum() == pytest.approx(0.15, abs=0.02)
    assert selected[:, tokens.index("##ed")].any()  # suffix pieces are masked with their word


def test_spread_to_words_and_word_starts_on_arrays():
    maskable = np.array([[False, True, True, True, False, True, True]])
    offsets = np.array([[[0, 0], [0, 3], [3, 5], [6, 8], [0, 0], [0, 2], [2, 4]]])  # [SEP] then a new line's word
    starts = word_starts(offsets, maskable)
    assert starts.tolist() == [[False, True, False, True, False, True, False]]
    selected = np.array([[False, True, False, False, False, True, False]])
    assert spread_to_words(selected, maskable, starts).tolist() == [[False, True, True, False, False, True, True]]


# ---- text features ------------------------------------------------------------------------------------


def test_line_by_line_is_one_truncated_example_per_line(make_tokenizer, tmp_path):
    tokenizer = make_tokenizer(LINES)
    path = tmp_path / "t.txt"
    path.write_bytes(("\r\n".join([LINES[1], "   ", "", LINES[0]]) + "\r\n").encode())
    lines = read_lines(path)
    assert lines == [LINES[1], LINES[0]]  # blank lines dropped
    features = text_features(lines, tokenizer, 16, line_by_line=True, whole_word=False, path=path)
    assert set(features) == {"input_ids", "token_type_ids", "attention_mask", "maskable"}
    ids = features["input_ids"]
    assert ids.shape == (2, 16)
    short = tokenizer(LINES[1])["input_ids"]
    assert ids[0, :len(short)].tolist() == short and (ids[0, len(short):] == tokenizer.pad_token_id).all()
    assert ids[1].tolist() == tokenizer(LINES[0], truncation=True, max_length=16)["input_ids"]  # truncated, [SEP] last
    special = np.isin(ids, [tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id])
    assert (features["maskable"] == ~special).all()


def test_grouped_blocks_are_run_mlm_group_texts(make_tokenizer):
    tokenizer = make_tokenizer(LINES)
    joined = [token for line in LINES for token in tokenizer(line)["input_ids"]]
    features = text_features(LINES, tokenizer, 16, line_by_line=False, whole_word=True, path="t.txt")
    rows = len(joined) // 16
    assert features["input_ids"].shape == (rows, 16) and rows >= 3
    assert features["input_ids"].reshape(-1).tolist() == joined[:rows * 16]  # the remainder dropped
    assert (features["attention_mask"] == 1).all() and (features["token_type_ids"] == 0).all()
    assert (features["maskable"] == ~np.isin(features["input_ids"], tokenizer.all_special_ids)).all()
    assert features["word_starts"][:, 0][features["maskable"][:, 0]].all()  # a block starts a word
    with pytest.raises(DataError, match=r"t.txt: its \d+ tokens make no block of 512"):
        text_features(LINES, tokenizer, 512, line_by_line=False, whole_word=False, path="t.txt")


# ---- the loss and the scores -----------------------------------------------------------------------------


def test_masked_scores_and_loss_op_are_the_mean_over_masked_tokens(backend):
    from tasks.train import step_module
    from backends import framework

    rng = np.random.default_rng(0)
    logits = 3 * rng.standard_normal((3, 5, 7))
    labels = np.where(rng.random((3, 5)) < 0.4, rng.integers(0, 7, (3, 5)), IGNORE_INDEX)
    labels[2] = IGNORE_INDEX  # a row without masked tokens
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    rows, positions = np.nonzero(labels != IGNORE_INDEX)
    token_losses = -log_probs[rows, positions, labels[rows, positions]]
    sums, counts = masked_lm_losses(logits, labels)
    assert counts.tolist() == [(labels[r] != IGNORE_INDEX).sum() for r in range(3)] and counts[2] == 0
    np.testing.assert_allclose(sums, [token_losses[rows == r].sum() for r in range(3)], rtol=1e-13)
    metrics = masked_lm_metrics(sums, counts)
    assert metrics["loss"] == pytest.approx(token_losses.mean(), rel=1e-13)
    assert metrics["perplexity"] == pytest.approx(np.exp(token_losses.mean()), rel=1e-13)
    ops, adapter = step_module(backend), framework(backend)
    loss = adapter.to_numpy(ops.masked_cross_entropy(adapter.from_numpy(logits), adapter.from_numpy(labels)))
    assert float(loss) == pytest.approx(token_losses.mean(), rel=1e-12)
    nothing = ops.masked_cross_entropy(adapter.from_numpy(logits), adapter.from_numpy(np.full((3, 5), IGNORE_INDEX)))
    assert float(adapter.to_numpy(nothing)) == 0.0
    with pytest.raises(ValueError, match="no masked token"):
        masked_lm_metrics(sums[2:], counts[2:])


# ---- the command line ------------------------------------------------------------------------------------


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def write_texts(folder, lines=LINES, repeats=(6, 2)):
    folder.mkdir(parents=True, exist_ok=True)
    for name, count in zip(("train.txt", "dev.txt"), repeats):
        (folder / name).write_text("\n".join(lines * count) + "\n", encoding="utf-8")
    return folder


def roberta_folder(folder):
    """A tiny RoBERTa config with a byte-level BPE tokenizer (<mask> included)."""
    write_byte_level_bpe(folder)
    vocab = len(json.loads((folder / "vocab.json").read_text()))
    (folder / "config.json").write_text(tiny_config("roberta", dropout=True, vocab_size=vocab,
                                                    max_position_embeddings=40).to_json_string())
    return folder


@pytest.fixture(scope="module")
def model_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlm-models")
    return {"bert": write_model_folder(root / "bert", "bert", dropout=True), "roberta": roberta_folder(root / "roberta")}


# family -> (text options, --max-seq-length)
RUNS = {"bert": (["--whole-word-masking"], 16), "roberta": (["--line-by-line"], 24)}


def finetune(capsys, model, data, out, backend, *extra):
    options, length = RUNS["roberta" if "roberta" in str(model) else "bert"]
    return run(capsys, "finetune", "--task", "mlm", "--model", model, "--backend", backend, "--train-file",
               data / "train.txt", "--validation-file", data / "dev.txt", "--output-dir", out, "--do-train",
               "--do-eval", "--batch-size", 4, "--grad-accum", 2, "--learning-rate", 1e-3, "--warmup-ratio", 0.2,
               "--weight-decay", 0.01, "--max-seq-length", length, "--no-progress", *options, *extra)


def step_losses(out) -> np.ndarray:
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return np.array([entry["loss"] for entry in history if "loss" in entry])


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("family_name", ["bert", "roberta"])
def test_training_and_perplexity_are_the_same_in_every_backend(family_name, model_folders, tmp_path, capsys):
    """float64, dropout on (shared masks): every backend masks the same tokens, so the step losses, the weights
    and the validation loss and perplexity agree; the folder trained in one backend evaluates in the others."""
    data, model = write_texts(tmp_path / "data"), model_folders[family_name]
    results, weights = {}, {}
    for backend in BACKENDS:
        out = tmp_path / backend
        code, stdout, err = finetune(capsys, model, data, out, backend, "--dtype", "float64", "--max-steps", 6,
                                     "--eval-steps", 3)
        assert code == 0, err
        results[backend] = json.loads(stdout)
        weights[backend] = dict(SafetensorsReader(out / "model.safetensors"))
        assert (out / "eval" / "masked_lm_losses.tsv").is_file() and (out / "best" / "model.safetensors").is_file()
    reference = results[BACKENDS[0]]
    assert reference["global_step"] == 6 and reference["eval_masked_tokens"] > 0
    assert reference["eval_perplexity"] == pytest.approx(np.exp(reference["eval_loss"]), rel=1e-12)
    assert 1 < reference["eval_perplexity"] < 2 * tiny_vocab(model)  # a near-uniform start, a little training
    ref_losses = step_losses(tmp_path / BACKENDS[0])
    assert len(ref_losses) == 6 and np.all(np.isfinite(ref_losses))
    state = json.loads((tmp_path / BACKENDS[0] / "trainer_state.json").read_text())
    perplexities = [entry["eval"]["perplexity"] for entry in state["log_history"] if "eval" in entry]
    assert len(perplexities) == 2 and state["best_metric"] == min(perplexities)  # lower is better
    for backend in BACKENDS[1:]:
        np.testing.assert_allclose(step_losses(tmp_path / backend), ref_losses, rtol=0, atol=1e-8)
        assert max_weight_diff(weights[backend], weights[BACKENDS[0]]) <= 1e-8
        for key in ("eval_loss", "eval_perplexity"):
            assert results[backend][key] == pytest.approx(reference[key], rel=1e-9), (backend, key)
        assert results[backend]["eval_masked_tokens"] == reference["eval_masked_tokens"]
    trained = tmp_path / BACKENDS[0]
    for backend in BACKENDS:  # float32 evaluation of the saved folder in every backend
        options, length = RUNS[family_name]
        code, stdout, err = run(capsys, "evaluate", "--task", "mlm", "--model", trained, "--backend", backend,
                                "--validation-file", data / "dev.txt", "--max-seq-length", length, "--no-progress",
                                *options)
        assert code == 0, err
        assert json.loads(stdout)["eval_loss"] == pytest.approx(reference["eval_loss"], rel=1e-5), backend


def tiny_vocab(model) -> int:
    return json.loads((model / "config.json").read_text())["vocab_size"]


@pytest.mark.usefixtures("one_thread")
def test_training_lowers_the_validation_perplexity_and_resume_masks_as_the_whole_run(model_folders, tmp_path,
                                                                                    capsys):
    data, model = write_texts(tmp_path / "data"), model_folders["bert"]
    code, stdout, err = run(capsys, "evaluate", "--task", "mlm", "--model", model, "--backend", BACKENDS[0],
                            "--validation-file", data / "dev.txt", "--max-seq-length", 16, "--whole-word-masking",
                            "--no-progress")
    assert code == 0, err
    before = json.loads(stdout)["eval_perplexity"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    code, stdout, err = finetune(capsys, model, data, full, BACKENDS[0], "--max-steps", 8, "--save-steps", 4,
                                 "--learning-rate", 3e-3)
    assert code == 0, err
    assert json.loads(stdout)["eval_perplexity"] < 0.8 * before
    shutil.copytree(full / "checkpoint-4", cut / "checkpoint-4")
    code, stdout, err = finetune(capsys, model, data, cut, BACKENDS[0], "--max-steps", 8, "--save-steps", 4,
                                 "--learning-rate", 3e-3, "--resume")
    assert code == 0, err
    np.testing.assert_array_equal(step_losses(cut), step_losses(full))  # the same masks after the resume
    assert max_weight_diff(dict(SafetensorsReader(cut / "model.safetensors")),
                           dict(SafetensorsReader(full / "model.safetensors"))) == 0
    # the checkpoint records the masking it trained with: other masking is refused before anything runs
    other = tmp_path / "other"
    shutil.copytree(full / "checkpoint-4", other / "checkpoint-4")
    code, stdout, err = finetune(capsys, model, data, other, BACKENDS[0], "--max-steps", 8, "--save-steps", 4,
                                 "--learning-rate", 3e-3, "--resume", "--mlm-probability", 0.3)
    assert code == 2 and "mlm_probability (0.15 there, 0.3 now)" in err and err.count("\n") == 1, err


# ---- SQuAD paragraphs as text ------------------------------------------------------------------------------


def squad_file(path, contexts):
    data = {"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": c, "qas": []} for c in contexts]}]}
    path.write_bytes(gzip.compress(json.dumps(data).encode()) if path.suffix == ".gz" else json.dumps(data).encode())
    return path


def test_squad_contexts_writes_each_paragraph_once_per_line(tmp_path, capsys):
    source = squad_file(tmp_path / "train.json.gz", ["First  paragraph.\nIt goes on.", "Second one.",
                                                     "First paragraph. It goes on.", "Third."])
    assert squad_contexts(source) == ["First paragraph. It goes on.", "Second one.", "Third."]
    assert text_main(["squad-contexts", str(source), str(tmp_path / "out.txt"), "--limit", "2"]) == 0
    assert (tmp_path / "out.txt").read_text() == "First paragraph. It goes on.\nSecond one.\n"
    assert "2 paragraphs" in capsys.readouterr().out


def test_real_squad_dev_contexts(shared_data, tmp_path):
    out = tmp_path / "dev.txt"
    assert text_main(["squad-contexts", str(shared_data("squad", "dev-v1.1.json")), str(out)]) == 0
    lines = read_lines(out)
    data = json.loads(shared_data("squad", "dev-v1.1.json").read_text())
    contexts = [" ".join(p["context"].split()) for article in data["data"] for p in article["paragraphs"]]
    assert lines == list(dict.fromkeys(contexts)) and len(lines) > 2000  # file order, each once


@pytest.mark.parametrize("content,message", [
    (None, "not found"),
    (b"", "invalid JSON"),
    (b'{"data": []}', "holds no paragraph text"),
    (b'{"data": [{"paragraphs": [{"context": 3}]}]}', r"data\[0\]\.paragraphs\[0\]\.context: context must be a string"),
])
def test_squad_contexts_bad_input(content, message, tmp_path, capsys):
    source = tmp_path / "in.json"
    if content is not None:
        source.write_bytes(content)
    assert text_main(["squad-contexts", str(source), str(tmp_path / "out.txt")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(source) in err and __import__("re").search(message, err), err
    assert not (tmp_path / "out.txt").exists() and list(tmp_path.iterdir()) == ([source] if content is not None else [])


# ---- bad input -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["empty", "blank", "missing", "specials-only", "probability", "tinybert",
                                  "other-task", "predict", "short-dev"])
def test_bad_input_is_one_line_exit_2(case, model_folders, tmp_path, capsys):
    data = write_texts(tmp_path / "data")
    model, extra, expected = model_folders["bert"], [], None
    if case == "empty":
        (data / "train.txt").write_text("")
        expected = f"{data / 'train.txt'}: holds no text lines"
    elif case == "blank":
        (data / "dev.txt").write_text("\n  \n\t\n")
        expected = f"{data / 'dev.txt'}: holds no text lines"
    elif case == "missing":
        (data / "train.txt").unlink()
        expected = f"{data / 'train.txt'} not found"
    elif case == "specials-only":
        (data / "dev.txt").write_text("[SEP] [CLS]\n")
        extra, expected = ["--line-by-line"], f"{data / 'dev.txt'}: holds no token that can be masked"
    elif case == "probability":
        extra, expected = ["--mlm-probability", "1.5"], "--mlm-probability: the masking probability must lie in"
    elif case == "tinybert":
        model = write_model_folder(tmp_path / "tinybert", "tinybert")
        expected = "family tinybert has no mlm head"
    elif case == "predict":
        extra, expected = ["--do-predict"], "mlm: nothing to predict"
    elif case == "short-dev":
        (data / "dev.txt").write_text("a cat\n")
        extra, expected = ["--line-by-line"], f"{data / 'dev.txt'}: too little text"
    args = ["finetune", "--task", "mlm", "--model", model, "--backend", BACKENDS[0], "--train-file",
            data / "train.txt", "--validation-file", data / "dev.txt", "--output-dir", tmp_path / "out",
            "--do-train", "--do-eval", "--max-seq-length", 16, "--no-progress", *extra]
    if case == "other-task":
        args[2], expected = "sst-2", "--line-by-line applies to --task mlm only"
        args += ["--line-by-line"]
    code, out, err = run(capsys, *args)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert "error: " in err and expected in err, err
    assert not (tmp_path / "out").exists()
