"""bench/sst2_bilstm.py without running a stage: bad input exits 2 in one line, and the table's gain and goal."""
from argparse import Namespace

import pytest

from .conftest import assert_refused  # conftest puts the bench folder on sys.path
import sst2_bilstm  # noqa: E402  (the bench folder is not a package)
from _stages import check_settings  # noqa: E402


@pytest.mark.parametrize("change, option", [
    ({"teacher": "missing"}, "--teacher"),
    ({"data_dir": "missing"}, "--data-dir"),
    ({"backends": "torch,jax"}, "--backends"),
    ({"samples": "0"}, "--samples"),
])
def test_bad_input_is_one_line_naming_the_option_and_exit_2(tmp_path, teacher, data_dir, change, option):
    options = {"teacher": str(teacher), "data_dir": str(data_dir), "output_dir": str(tmp_path / "out"),
               "backends": "torch", "samples": "4"}
    options.update({key: str(tmp_path / value) if value == "missing" else value for key, value in change.items()})
    assert_refused("sst2_bilstm.py", options, option, tmp_path / "out")


def test_the_gain_is_distilled_minus_plain_in_points_and_the_goal_is_per_backend():
    def timed(seconds):
        return {"params": 10, "params_without_embedding": 4, "seconds_batch1": seconds, "seconds_batch64": seconds / 8,
                "cpu_seconds_batch1": seconds, "cpu_seconds_batch64": seconds / 8}

    backends = ["torch", "tf"]
    timings = {**{("teacher", b): timed(10.0) for b in backends}, **{("bilstm", b): timed(0.5) for b in backends},
               **{("bert-base", b): timed(100.0) for b in backends}}
    accuracy = {("teacher", "torch"): 0.9, ("plain", "torch"): 0.80, ("distilled", "torch"): 0.83,
                ("teacher", "tf"): 0.9, ("plain", "tf"): 0.80, ("distilled", "tf"): 0.82}
    rows = sst2_bilstm.table_rows(Namespace(backends=backends), accuracy, timings)
    distilled = {row["backend"]: row for row in rows if row["model"] == "distilled"}
    assert distilled["torch"]["gain"] == pytest.approx(3.0) and distilled["torch"]["goal_pass"]
    assert distilled["tf"]["gain"] == pytest.approx(2.0) and not distilled["tf"]["goal_pass"]
    plain = next(row for row in rows if row["model"] == "plain")
    assert plain["speedup_vs_teacher_batch1"] == pytest.approx(20.0)
    assert plain["speedup_vs_bert_base_batch64"] == pytest.approx(200.0)
    assert distilled["torch"]["timed_as"] == "plain"


def test_a_rerun_into_the_same_folder_must_give_the_same_settings(tmp_path):
    options = {option: 1 for option in sst2_bilstm.RESULT_OPTIONS}
    first = Namespace(output_dir=str(tmp_path), **options)
    assert check_settings(first, sst2_bilstm.RESULT_OPTIONS) is None  # written
    assert check_settings(first, sst2_bilstm.RESULT_OPTIONS) is None  # the same: the stages' results are reused
    problem = check_settings(Namespace(output_dir=str(tmp_path), **{**options, "epochs": 3}),
                             sst2_bilstm.RESULT_OPTIONS)
    assert problem.startswith(f"--output-dir {tmp_path} holds the results of other settings (--epochs 1)")
