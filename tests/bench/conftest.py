"""Fixtures of the bench tests (bench/sst2_bilstm.py, bench/sst2_tinybert.py): the bench folder on
sys.path (it is not a package), a teacher folder and an SST-2 data folder that pass the benches' input checks."""
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))


@pytest.fixture
def teacher(tmp_path):
    folder = tmp_path / "teacher"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return folder


@pytest.fixture
def data_dir(tmp_path):
    folder = tmp_path / "SST-2"
    folder.mkdir()
    for name in ("train.tsv", "dev.tsv"):
        (folder / name).write_text("sentence\tlabel\na fine film \t1\n")
    return folder


def assert_refused(script: str, options: dict, option: str, output_dir: Path) -> None:
    """`python bench/<script> --key value ...` exits 2 with one line naming `option`, writing nothing."""
    command = [sys.executable, str(BENCH / script)]
    for key, value in options.items():
        command += [f"--{key.replace('_', '-')}", value]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(f"error: {option}")
    assert not output_dir.exists()
