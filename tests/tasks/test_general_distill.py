"""TinyBERT's general distillation (`python -m tasks distill --general`): the same steps in every backend, a loss
that falls, a student the task stages load, and the refusals (one line, exit 2, nothing written)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from backends import family
from backends.tensorfile import SafetensorsReader
from tasks.__main__ import main
from tasks.data.features import load_tokenizer
from tasks.general_distill import CorpusTask
from tasks.train.model import load_model, save_model
from tasks.train.task import Options

from ..conftest import BACKENDS
from .test_train_support import one_thread  # noqa: F401  (fixture)
from .test_train_support import CONTEXT, write_glue, write_model_folder

pytestmark = pytest.mark.usefixtures("one_thread")

CORPUS = [line.strip() + " ." for line in CONTEXT.split(" . ")[:-1]] + [
    "The children read a good book .", "A man and a woman sat in the room ."]
STEPS = 4


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny seeded 4-layer BERT teacher (saved with its weights and tokenizer), a tiny 2-layer TinyBERT student
    (dropout on: shared masks), a corpus, tiny SST-2 files, and the general distillation run in the first backend."""
    root = tmp_path_factory.mktemp("general")
    bert = write_model_folder(root / "bert", "bert", num_hidden_layers=4)
    teacher = load_model(str(bert), "seqcls", 2, seed=3)  # a classifier too: the --intermediate stage's teacher
    save_model(root / "teacher", teacher, teacher.params, load_tokenizer(bert))
    student = write_model_folder(root / "tinybert", "tinybert", dropout=True, fit_size=16)
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    paths = {"root": root, "teacher": root / "teacher", "student": student, "corpus": corpus,
             "glue": write_glue(root / "glue", rows=8)}
    paths["run"] = general(paths, BACKENDS[0], root / BACKENDS[0])
    return paths


def general_args(paths, backend, output, *extra):
    return ["distill", "--general", "--teacher", str(paths["teacher"]), "--student", str(paths["student"]),
            "--backend", backend, "--train-file", str(paths["corpus"]), "--output-dir", str(output),
            "--max-seq-length", "8", "--batch-size", "4", "--max-steps", str(STEPS), "--learning-rate", "1e-2",
            "--dtype", "float64", "--no-progress", *extra]


def general(paths, backend, output):
    """Run general distillation (validation text: the corpus); the per-update losses and the results."""
    assert main(general_args(paths, backend, output, "--validation-file", str(paths["corpus"]))) == 0
    history = json.loads((output / "trainer_state.json").read_text())["log_history"]
    results = json.loads((output / "all_results.json").read_text())
    return np.array([entry["loss"] for entry in history if "loss" in entry]), results


def test_general_distillation_is_the_same_in_every_backend(setup):
    """float64, shared dropout masks: the per-update intermediate losses and the validation loss agree."""
    losses, results = setup["run"]
    assert len(losses) == STEPS and np.all(losses > 0)
    assert results["eval_samples"] > 0 and np.isfinite(results["eval_intermediate_loss"])
    for backend in BACKENDS[1:]:
        other, other_results = general(setup, backend, setup["root"] / backend)
        np.testing.assert_allclose(other, losses, rtol=0, atol=1e-8, err_msg=backend)
        assert other_results["eval_intermediate_loss"] == pytest.approx(results["eval_intermediate_loss"], abs=1e-8)


def test_general_distillation_lowers_the_loss(setup):
    losses, results = setup["run"]
    assert losses[-1] < losses[0], losses
    assert results["eval_intermediate_loss"] < losses[0]  # the trained student, scored on the same text


def test_saved_student_is_a_tinybert_base_model_with_the_teachers_tokenizer(setup):
    out = setup["root"] / BACKENDS[0]
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["TinyBertModel"] and config["fit_size"] == 16
    assert (out / "vocab.txt").read_text() == (setup["teacher"] / "vocab.txt").read_text()
    stored = dict(SafetensorsReader(out / "model.safetensors"))
    assert any(name.startswith("fit_dense.") for name in stored)
    reloaded = load_model(str(out), "base")
    assert not reloaded.fresh and set(reloaded.params) == set(stored)
    for name, array in stored.items():
        assert np.array_equal(reloaded.params[name], array), name
    # a task head takes the body and fit_dense from the folder: only its classifier is new
    for head in ("seqcls", "qa"):
        fresh = load_model(str(out), head, 2 if head == "seqcls" else None).fresh
        shapes = family("tinybert").param_shapes(reloaded.config, head)
        assert fresh and all(name not in stored and name in shapes for name in fresh), fresh
        assert not any("fit_dense" in name or "encoder" in name or "embeddings" in name for name in fresh), fresh


@pytest.mark.parametrize("stage", ["finetune", "intermediate"])
def test_task_stages_load_the_general_student(setup, stage, tmp_path, capsys):
    """No --tokenizer: the general student's folder holds the teacher's."""
    glue, student = setup["glue"], setup["root"] / BACKENDS[0]
    common = ["--task", "sst-2", "--backend", BACKENDS[0], "--data-dir", str(glue), "--output-dir",
              str(tmp_path / "out"), "--do-train", "--max-steps", "1", "--batch-size", "4", "--max-seq-length", "16",
              "--no-progress"]
    if stage == "finetune":
        argv = ["finetune", "--model", str(student), *common]
    else:
        argv = ["distill", "--intermediate", "--teacher", str(setup["teacher"]), "--student", str(student), *common]
    assert main(argv) == 0, capsys.readouterr().err
    assert (tmp_path / "out" / "model.safetensors").is_file()


@pytest.mark.parametrize("line_by_line", [False, True])
def test_corpus_rows(setup, line_by_line):
    """Grouped: the lines' tokens (each line with its special tokens) cut into full blocks; line by line: one padded
    row per line, [CLS] first."""
    tokenizer = load_tokenizer(setup["teacher"])
    task = CorpusTask(files={"train": setup["corpus"]}, options=Options(max_seq_length=8, line_by_line=line_by_line))
    inputs = task.load("train", tokenizer).inputs
    assert set(inputs) == {"input_ids", "token_type_ids", "attention_mask"}
    tokens = [tokenizer(line)["input_ids"] for line in CORPUS]
    if line_by_line:
        assert inputs["input_ids"].shape == (len(CORPUS), 8)
        assert (inputs["input_ids"][:, 0] == tokenizer.cls_token_id).all()
        assert inputs["attention_mask"].sum(1).tolist() == [min(len(ids), 8) for ids in tokens]
    else:
        joined = [token for ids in tokens for token in ids]
        assert inputs["input_ids"].ravel().tolist() == joined[:len(joined) // 8 * 8]
        assert inputs["attention_mask"].all()


def test_help_describes_general_distillation(capsys):
    assert main(["distill", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for words in ("--general", "one sentence or paragraph per line", "then --intermediate", "fit_size"):
        assert words in text, words


def refusal_case(setup, tmp_path, case):
    """(argv, expected text) of one bad input."""
    if case == "empty line":
        corpus = tmp_path / "corpus.txt"
        corpus.write_text("The cat sat .\n\nThe dog ran .\n", encoding="utf-8")
        return general_args({**setup, "corpus": corpus}, BACKENDS[0], tmp_path / "out"), f"{corpus}:2: empty line"
    if case == "empty corpus":
        corpus = tmp_path / "corpus.txt"
        corpus.write_text("", encoding="utf-8")
        return general_args({**setup, "corpus": corpus}, BACKENDS[0], tmp_path / "out"), f"{corpus}: holds no text"
    argv = general_args(setup, BACKENDS[0], tmp_path / "out")
    if case == "no task":  # a task stage without its task
        return [arg for arg in argv if arg != "--general"], "distill: give --task (or --general"
    if case == "task":
        return [*argv, "--task", "sst-2"], "leave out --task sst-2"
    if case == "vocabulary":
        vocab_size = json.loads((setup["teacher"] / "config.json").read_text())["vocab_size"] + 10
        return ([*argv, "--config-overrides", f"vocab_size={vocab_size}"],
                f"{setup['teacher'] / 'config.json'}: the teacher's vocab_size")
    if case == "layers":
        return [*argv, "--config-overrides", "num_hidden_layers=3"], "teacher layers (4"
    if case == "student":
        bert = write_model_folder(tmp_path / "bert", "bert")
        return [arg if arg != str(setup["student"]) else str(bert) for arg in argv], "needs a TinyBERT student"
    raise ValueError(case)


@pytest.mark.parametrize("case", ["empty line", "empty corpus", "no task", "task", "vocabulary", "layers", "student"])
def test_bad_general_distillation_input(setup, case, tmp_path, capsys):
    argv, expected = refusal_case(setup, tmp_path, case)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and expected in err, err
    assert not (tmp_path / "out").exists()
