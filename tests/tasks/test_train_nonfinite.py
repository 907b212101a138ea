"""A NaN/Inf loss stops training (TrainingDiverged, exit 1), or with skip_nonfinite_loss skips and counts the update;
shared-mask runs that skip stay identical across backends."""
from __future__ import annotations

import numpy as np
import pytest

from tasks.train.loop import Trainer, TrainArgs, TrainingDiverged, batch_order
from tasks.train.losses import LOSSES

from ..conftest import BACKENDS
from .test_train_support import one_thread  # noqa: F401  (fixture)
from .test_train_support import losses, make_runner, max_weight_diff, seeded_data, tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")

# 24 examples, micro-batches of 4, 2 per update: 3 updates per epoch, 6 in all; row POISON has a NaN target
SETTINGS = dict(epochs=2, batch_size=4, grad_accum=2, learning_rate=1e-3, seed=5, progress=False)
POISON = 7


def regression_data(config) -> dict:
    data = seeded_data("bert", config, "seqcls", rows=24)
    data["labels"] = np.random.default_rng(3).normal(size=24).astype(np.float32)
    data["labels"][POISON] = np.nan  # a poisoned example: every micro-batch holding it has a NaN loss
    return data


def poisoned_updates() -> list[int]:
    """0-based updates whose micro-batches hold row POISON."""
    steps = []
    for epoch in range(SETTINGS["epochs"]):
        batches = batch_order(24, SETTINGS["batch_size"], SETTINGS["seed"], epoch)
        micro = next(i for i, index in enumerate(batches) if POISON in index)
        steps.append(epoch * 3 + micro // SETTINGS["grad_accum"])
    return steps


def regression_trainer(backend, tmp_path, **settings) -> Trainer:
    config = tiny_config("bert", dropout=True, num_labels=1)
    runner = make_runner(backend, "bert", config, "seqcls", "float64")
    args = TrainArgs(**{**SETTINGS, **settings})
    return Trainer(runner, args, regression_data(config), LOSSES["regression"], tmp_path)


def test_nonfinite_loss_stops_with_the_update_number(tmp_path):
    trainer = regression_trainer(BACKENDS[0], tmp_path)
    first = poisoned_updates()[0]
    with pytest.raises(TrainingDiverged, match=f"the loss is nan at update {first + 1} .*--skip-nonfinite-loss"):
        trainer.train()
    assert trainer.state.step == first and TrainingDiverged.exit_code == 1


def test_skipped_updates_are_counted_and_identical_across_backends(tmp_path):
    """Dropout on, shared masks, float64: the skipped updates and every other one match in all backends."""
    skipped = poisoned_updates()
    assert len(skipped) == 2
    runs = {}
    for backend in BACKENDS:
        trainer = regression_trainer(backend, tmp_path / backend, skip_nonfinite_loss=True)
        steps = []
        step = trainer.runner.optimizer_step
        trainer.runner.optimizer_step = lambda *args: steps.append(trainer.state.step) or step(*args)
        metrics = trainer.train()
        assert metrics["train_skipped_updates"] == trainer.state.skipped == 2, backend
        assert steps == [s for s in range(6) if s not in skipped], backend  # no AdamW update on a skipped one
        assert [entry["step"] - 1 for entry in trainer.state.log_history if "skipped" in entry] == skipped
        assert np.isfinite(metrics["train_loss"]) and len(losses(trainer)) == 4
        params = trainer.runner.get_params()
        assert all(np.isfinite(array).all() for array in params.values()), backend
        runs[backend] = losses(trainer), params
    reference_losses, reference_params = runs[BACKENDS[0]]
    for backend, (run_losses, params) in runs.items():
        np.testing.assert_allclose(run_losses, reference_losses, rtol=0, atol=1e-10, err_msg=backend)
        assert max_weight_diff(params, reference_params) <= 1e-10, backend


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_learning_rate_that_blows_up(backend, tmp_path):
    """lr 1e30 (float32): after the first update every loss is NaN or Inf; skipping cannot help, so both modes
    stop, the skipping one once an epoch's worth of updates in a row was skipped."""
    for skip, message in ((False, r"the loss is (nan|inf) at update 2 "), (True, "at 2 updates in a row, up to update 3")):
        config = tiny_config("bert")
        runner = make_runner(backend, "bert", config, "seqcls", "float32")
        data = seeded_data("bert", config, "seqcls", rows=8)
        args = TrainArgs(epochs=3, batch_size=4, learning_rate=1e30, progress=False, skip_nonfinite_loss=skip)
        trainer = Trainer(runner, args, data, LOSSES["classification"], tmp_path)
        with pytest.raises(TrainingDiverged, match=message):
            trainer.train()
        assert trainer.state.skipped == (2 if skip else 0)


def test_skipping_stops_when_the_weights_are_not_finite(tmp_path):
    """Inf weights make every loss NaN: skipping would train nothing, so the run stops naming the tensor."""
    config = tiny_config("bert")
    runner = make_runner(BACKENDS[0], "bert", config, "seqcls", "float32")
    params = runner.get_params()
    params["bert.embeddings.LayerNorm.weight"][0] = np.inf
    runner.set_params(params)
    args = TrainArgs(max_steps=4, batch_size=4, progress=False, skip_nonfinite_loss=True)
    trainer = Trainer(runner, args, seeded_data("bert", config, "seqcls", rows=8), LOSSES["classification"], tmp_path)
    with pytest.raises(TrainingDiverged, match=r"update 1 .*weights are no longer finite "
                                               r"\(bert.embeddings.LayerNorm.weight\)"):
        trainer.train()


def test_a_run_with_skipped_updates_resumes_exactly(tmp_path):
    """Checkpoints count the skipped updates; a resumed run skips the same ones and ends where the whole run ends."""
    skipped = poisoned_updates()
    full = regression_trainer(BACKENDS[0], tmp_path / "full", skip_nonfinite_loss=True)
    full.train()
    cut = regression_trainer(BACKENDS[0], tmp_path / "cut", skip_nonfinite_loss=True, save_steps=skipped[0] + 1)
    step = cut.runner.optimizer_step

    def stop_after_checkpoint(*args):  # the first update after the checkpoint of the first skipped one
        if cut.state.step > skipped[0]:
            raise KeyboardInterrupt
        return step(*args)

    cut.runner.optimizer_step = stop_after_checkpoint
    with pytest.raises(KeyboardInterrupt):
        cut.train()
    checkpoint = tmp_path / "cut" / f"checkpoint-{skipped[0] + 1}"
    resumed = regression_trainer(BACKENDS[0], tmp_path / "cut", skip_nonfinite_loss=True, save_steps=skipped[0] + 1)
    metrics = resumed.train(checkpoint)
    assert metrics["train_skipped_updates"] == 2 == full.state.skipped
    assert (losses(resumed) == losses(full)).all()
    assert max_weight_diff(resumed.runner.get_params(), full.runner.get_params()) == 0.0
