"""python -m tasks on broken inputs: one line naming the file (and line, key or tensor), exit 2 before any work
(exit 1 when a run diverges); path options checked before a model loads; damaged or finished checkpoints refused."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

import tasks.train.job
from backends.tensorfile import SafetensorsReader, save_arrays
from tasks.__main__ import main
from tasks.train.task import GlueTask

from ..conftest import BACKENDS
from .test_train_support import one_thread  # noqa: F401  (fixture)
from .test_train_support import write_glue, write_model_folder, write_squad

pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = ["--max-seq-length", "32", "--no-progress", "--batch-size", "4"]


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    return write_model_folder(tmp_path_factory.mktemp("model"), "bert")


@pytest.fixture(scope="module")
def trained(model_folder, tmp_path_factory):
    """A finished 4-update SST-2 run with checkpoint-2 and checkpoint-4, and the command that made it."""
    root = tmp_path_factory.mktemp("trained")
    data, out = write_glue(root / "data"), root / "out"
    command = ["finetune", "--task", "sst-2", "--model", model_folder, "--backend", BACKENDS[0], "--data-dir", data,
               "--output-dir", out, "--do-train", "--max-steps", 4, "--save-steps", 2, *SMALL]
    assert main([str(a) for a in command]) == 0
    return out, command


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if not line.startswith("note: ")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if the command gets as far as loading the model."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the check")
    monkeypatch.setattr(tasks.train.job, "load_model", refuse)


def finetune(data, out, model_folder, *extra):
    return ["finetune", "--task", "sst-2", "--model", model_folder, "--backend", BACKENDS[0], "--data-dir", data,
            "--output-dir", out, "--do-train", *SMALL, *extra]


# ---- path options -----------------------------------------------------------------------------------------------

def test_output_dir_that_is_a_file(model_folder, tmp_path, capsys, no_model_load):
    data = write_glue(tmp_path / "data")
    (tmp_path / "out").write_text("")
    code, _, err = run(capsys, *finetune(data, tmp_path / "out", model_folder))
    assert code == 2 and "--output-dir" in one_line(err) and "out is a file; give a folder" in err
    code, _, err = run(capsys, *finetune(data, tmp_path / "out" / "run1", model_folder))
    assert code == 2 and "run1 lies under the file" in one_line(err)


def test_unwritable_output_dir(model_folder, tmp_path, capsys, no_model_load, monkeypatch):
    data, parent = write_glue(tmp_path / "data"), tmp_path / "locked"
    parent.mkdir()
    if os.geteuid() == 0:  # root writes anywhere: make the probe fail as a read-only place would
        def read_only(*args, **kwargs):
            raise PermissionError(13, "Permission denied")
        monkeypatch.setattr(tasks.train.job.tempfile, "TemporaryDirectory", read_only)
    else:
        parent.chmod(0o500)
    code, _, err = run(capsys, *finetune(data, parent / "out", model_folder))
    parent.chmod(0o700)
    assert code == 2 and f"cannot write in {parent} (Permission denied)" in one_line(err)
    assert not (parent / "out").exists()


def test_data_dir_that_is_a_file(model_folder, tmp_path, capsys, no_model_load):
    (tmp_path / "data").write_text("")
    code, _, err = run(capsys, *finetune(tmp_path / "data", tmp_path / "out", model_folder))
    assert code == 2 and "--data-dir" in one_line(err) and "data is a file" in err


# ---- data files -------------------------------------------------------------------------------------------------

def test_bad_data_files_name_file_and_position(model_folder, tmp_path, capsys):
    data = write_glue(tmp_path / "glue")
    (data / "train.tsv").write_bytes((data / "train.tsv").read_bytes().replace(b"\n", b"\n\xff", 1))
    code, _, err = run(capsys, *finetune(data, tmp_path / "out", model_folder))
    assert code == 2 and f"{data / 'train.tsv'}:2: not UTF-8 text" in one_line(err)
    assert not (tmp_path / "out").exists()

    squad = write_squad(tmp_path / "squad")
    record = json.loads((squad / "train-v1.1.json").read_text())
    del record["data"][0]["paragraphs"][0]["context"]
    (squad / "train-v1.1.json").write_text(json.dumps(record))
    code, _, err = run(capsys, "finetune", "--task", "squad", "--model", model_folder, "--backend", BACKENDS[0],
                       "--data-dir", squad, "--output-dir", tmp_path / "out", "--do-train", *SMALL)
    assert code == 2
    assert f"{squad / 'train-v1.1.json'}:data[0].paragraphs[0]: missing key 'context'" in one_line(err)


def test_unlabelled_train_or_dev_split_is_refused(model_folder, tmp_path, capsys):
    for split in ("train", "dev"):
        data = write_glue(tmp_path / f"glue-{split}")
        (data / f"{split}.tsv").write_text((data / f"{split}.tsv").read_text().replace("\tlabel\n", "\tlabl\n", 1))
        code, _, err = run(capsys, *finetune(data, tmp_path / split, model_folder, "--do-eval"))
        assert code == 2 and f"{data / f'{split}.tsv'}: the {split} split has no labels" in one_line(err)


def test_nan_weights_in_a_model_folder_are_refused(trained, tmp_path, capsys):
    out, _ = trained
    model = tmp_path / "model"
    shutil.copytree(out, model, ignore=shutil.ignore_patterns("checkpoint-*"))
    weights = dict(SafetensorsReader(model / "model.safetensors"))
    weights["bert.encoder.layer.0.output.dense.weight"][1, 2] = np.nan
    save_arrays(model / "model.safetensors", weights)
    code, _, err = run(capsys, "evaluate", "--task", "sst-2", "--model", model, "--backend", BACKENDS[0],
                       "--data-dir", out.parent / "data", *SMALL)
    assert code == 2
    assert f"{model / 'model.safetensors'}: bert.encoder.layer.0.output.dense.weight holds NaN or Inf" in one_line(err)


# ---- resume -----------------------------------------------------------------------------------------------------

def damage_trainer_state(folder):
    text = (folder / "trainer_state.json").read_text()
    (folder / "trainer_state.json").write_text(text[: len(text) // 2])


def drop_step(folder):
    state = json.loads((folder / "trainer_state.json").read_text())
    del state["step"]
    (folder / "trainer_state.json").write_text(json.dumps(state))


def empty_optimizer(folder):
    save_arrays(folder / "optimizer.safetensors", {})


def nan_moment(folder):
    state = dict(SafetensorsReader(folder / "optimizer.safetensors"))
    state["exp_avg.classifier.weight"][0, 0] = np.inf
    save_arrays(folder / "optimizer.safetensors", state)


def nan_weight(folder):
    weights = dict(SafetensorsReader(folder / "model.safetensors"))
    weights["classifier.bias"][0] = np.nan
    save_arrays(folder / "model.safetensors", weights)


@pytest.mark.parametrize("damage, expected", [
    (damage_trainer_state, "checkpoint-2/trainer_state.json: damaged"),
    (drop_step, "checkpoint-2/trainer_state.json: damaged or incomplete (no 'step')"),
    (lambda f: (f / "trainer_state.json").unlink(), "checkpoint-2/trainer_state.json: missing; not a checkpoint"),
    (empty_optimizer, "checkpoint-2/optimizer.safetensors: holds no optimizer state"),
    (lambda f: (f / "optimizer.safetensors").unlink(), "checkpoint-2/optimizer.safetensors: no such file"),
    (nan_moment, "checkpoint-2/optimizer.safetensors: exp_avg.classifier.weight holds NaN or Inf"),
    (nan_weight, "checkpoint-2/model.safetensors: classifier.bias holds NaN or Inf"),
])
def test_damaged_checkpoints_are_refused(damage, expected, trained, tmp_path, capsys):
    out, command = trained
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    damage(copy / "checkpoint-2")
    argv = [str(copy) if str(a) == str(out) else a for a in command]
    code, _, err = run(capsys, *argv, "--resume", copy / "checkpoint-2")
    assert code == 2 and expected in one_line(err)
    assert (copy / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()


def test_a_finished_checkpoint_has_nothing_to_resume(trained, capsys):
    out, command = trained
    code, _, err = run(capsys, *command, "--resume")  # the latest: checkpoint-4 of a 4-update run
    assert code == 2 and "checkpoint-4: the checkpoint is at step 4, at this run's last step 4" in one_line(err)
    code, _, err = run(capsys, *command[:-len(SMALL) - 4], "--max-steps", 1, "--save-steps", 2, *SMALL,
                       "--resume", out / "checkpoint-2")
    assert code == 2 and "at step 2, past this run's last step 1 (--max-steps" in one_line(err)


# ---- a run whose loss turns NaN ---------------------------------------------------------------------------------

def test_nonfinite_loss_exit_1_or_skipped_and_counted(model_folder, tmp_path, capsys, monkeypatch):
    """An STS-B target made NaN after reading (the reader refuses "nan"): exit 1, or the update skipped."""
    load = GlueTask.load

    def poisoned(self, split, tokenizer, limit=None, inputs=None):
        loaded = load(self, split, tokenizer, limit, inputs)
        if split == "train":
            loaded.inputs["labels"][5] = np.nan
        return loaded

    monkeypatch.setattr(GlueTask, "load", poisoned)
    data = write_glue(tmp_path / "data", "sts-b")
    command = ["finetune", "--task", "sts-b", "--model", model_folder, "--backend", BACKENDS[0], "--data-dir", data,
               "--do-train", "--epochs", 1, *SMALL]
    code, _, err = run(capsys, *command, "--output-dir", tmp_path / "stop")
    assert code == 1 and "the loss is nan at update" in one_line(err)
    assert not (tmp_path / "stop" / "model.safetensors").exists()
    code, stdout, err = run(capsys, *command, "--output-dir", tmp_path / "skip", "--skip-nonfinite-loss")
    assert code == 0, err
    results = json.loads(stdout)
    assert results["train_skipped_updates"] == 1 and results["global_step"] == 6 and np.isfinite(results["train_loss"])
    assert json.loads((tmp_path / "skip" / "train_results.json").read_text())["train_skipped_updates"] == 1
