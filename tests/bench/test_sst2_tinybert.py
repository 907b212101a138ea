"""bench/sst2_tinybert.py without running a stage: bad input exits 2 in one line, and the table's goals."""

import pytest

from .conftest import assert_refused  # conftest puts the bench folder on sys.path
import sst2_tinybert  # noqa: E402  (the bench folder is not a package)


@pytest.fixture
def squad_file(tmp_path):
    path = tmp_path / "train.json"
    path.write_text('{"data": []}')
    return path


@pytest.mark.parametrize("change, option", [
    ({"teacher": "missing"}, "--teacher"),
    ({"data_dir": "missing"}, "--data-dir"),
    ({"squad_file": "missing"}, "--squad-file"),
    ({"augment_dir": "teacher"}, "--augment-dir"),  # a folder without train.tsv
    ({"backends": "torch,jax"}, "--backends"),
    ({"samples": "0"}, "--samples"),
    ({"general_steps": "0"}, "--general-steps"),
    ({"general_learning_rate": "0"}, "--general-learning-rate"),
])
def test_bad_input_is_one_line_naming_the_option_and_exit_2(tmp_path, teacher, data_dir, squad_file, change, option):
    options = {"teacher": str(teacher), "data_dir": str(data_dir), "squad_file": str(squad_file),
               "output_dir": str(tmp_path / "out"), "backends": "torch", "samples": "4"}
    options.update({key: str(tmp_path / value) if value in ("missing", "teacher") else value
                    for key, value in change.items()})
    assert_refused("sst2_tinybert.py", options, option, tmp_path / "out")


def test_the_goals_are_points_below_the_teacher_and_ahead_of_the_finetuned_student():
    met = sst2_tinybert.goals(teacher=0.90, finetuned=0.80, distilled=0.88)
    assert met["points_below_teacher"] == pytest.approx(2.0) and met["goal_teacher"]
    assert met["points_ahead_of_finetuned"] == pytest.approx(8.0) and met["goal_ahead"] and met["goal_pass"]
    too_far = sst2_tinybert.goals(teacher=0.90, finetuned=0.80, distilled=0.865)
    assert too_far["goal_ahead"] and not too_far["goal_teacher"] and not too_far["goal_pass"]
    not_ahead = sst2_tinybert.goals(teacher=0.90, finetuned=0.875, distilled=0.88)
    assert not_ahead["goal_teacher"] and not not_ahead["goal_ahead"] and not not_ahead["goal_pass"]


def test_every_backend_has_a_row_per_stage_and_the_prediction_rows_carry_the_goals():
    backends = ["torch", "tf"]
    accuracy, loss = {}, {}
    for backend in backends:
        accuracy.update({("teacher", False, backend): 0.9, ("finetuned", False, backend): 0.8})
        loss["general", False, backend] = 1.5
        for augmented in (False, True):
            accuracy["intermediate", augmented, backend] = 0.5
            accuracy["prediction", augmented, backend] = 0.88 if augmented or backend == "torch" else 0.85
    rows = sst2_tinybert.table_rows(backends, accuracy, loss)
    assert len(rows) == 2 * 7
    predictions = {(row["backend"], row["augmented"]): row for row in rows if row["model"] == "prediction"}
    assert predictions["torch", False]["goal_pass"] and predictions["tf", True]["goal_pass"]
    assert not predictions["tf", False]["goal_pass"]  # 5 points below the teacher
    general = next(row for row in rows if row["model"] == "general")
    assert general["train_loss"] == 1.5 and general["accuracy"] is None
