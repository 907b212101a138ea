"""Resume: a run stopped after a checkpoint and resumed ends exactly where the uninterrupted run ends."""
from __future__ import annotations

import json

import numpy as np
import pytest

from backends.tensorfile import SafetensorsReader
from tasks.train.loop import (BEST_DIR, STATE_FILE, ResumeError, TrainArgs, check_settings, latest_checkpoint,
                              run_settings)

from ..conftest import BACKENDS
from .test_train_support import one_thread  # noqa: F401  (fixture)
from .test_train_support import losses, make_runner, make_trainer, max_weight_diff, seeded_data, tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")

# 20 examples in batches of 4: 5 updates per epoch, 10 in all; checkpoints after updates 3, 6 and 9
SETTINGS = dict(epochs=2, batch_size=4, learning_rate=1e-3, warmup_ratio=0.3, weight_decay=0.01, save_steps=3)


class Interrupted(Exception):
    pass


def interrupt_after(runner, updates: int):
    """Make the runner's update number `updates + 1` raise, as a killed process would stop there."""
    step, done = runner.optimizer_step, []

    def optimizer_step(*args):
        if len(done) == updates:
            raise Interrupted
        done.append(1)
        return step(*args)

    runner.optimizer_step = optimizer_step


def train(backend, config, data, output_dir, stop_after=None, resume=False, dropout_masks="shared"):
    runner = make_runner(backend, "bert", config, "seqcls", "float64", dropout_masks=dropout_masks)
    trainer = make_trainer(runner, data, output_dir, **SETTINGS)
    if stop_after is not None:
        interrupt_after(trainer.runner, stop_after)
        with pytest.raises(Interrupted):
            trainer.train()
        return None
    trainer.train(latest_checkpoint(output_dir) if resume else None)
    return trainer


@pytest.mark.parametrize("dropout_masks", ["shared", "native"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_resume_is_bit_identical(backend, dropout_masks, tmp_path):
    """float64 with dropout on: weights, optimizer moments, schedule, batch position and dropout seeds all resume."""
    config = tiny_config("bert", dropout=True)
    data = seeded_data("bert", config, "seqcls", rows=20)
    full = train(backend, config, data, tmp_path / "full", dropout_masks=dropout_masks)
    # into the second epoch, checkpoint-6 written
    train(backend, config, data, tmp_path / "cut", stop_after=7, dropout_masks=dropout_masks)
    assert latest_checkpoint(tmp_path / "cut").name == "checkpoint-6"
    resumed = train(backend, config, data, tmp_path / "cut", resume=True, dropout_masks=dropout_masks)
    assert resumed.state.step == full.state.step == 10
    assert (losses(resumed) == losses(full)).all()
    assert max_weight_diff(resumed.runner.get_params(), full.runner.get_params()) == 0.0
    moments = resumed.runner.optimizer_state(), full.runner.optimizer_state()
    assert max_weight_diff(*moments) == 0.0


@pytest.mark.skipif(len(BACKENDS) < 2, reason="needs two backends")
def test_resume_in_another_backend(tmp_path):
    """A checkpoint of the first backend (optimizer moments in canonical layout) continues in every other."""
    config = tiny_config("bert")
    data = seeded_data("bert", config, "seqcls", rows=20)
    reference = train(BACKENDS[0], config, data, tmp_path / "reference")
    train(BACKENDS[0], config, data, tmp_path / "cut", stop_after=6)
    for backend in BACKENDS[1:]:
        resumed = train(backend, config, data, tmp_path / "cut", resume=True)
        np.testing.assert_allclose(losses(resumed), losses(reference), rtol=0, atol=1e-10)
        assert max_weight_diff(resumed.runner.get_params(), reference.runner.get_params()) <= 1e-10, backend


def test_resume_refuses_other_settings(tmp_path):
    config = tiny_config("bert")
    data = seeded_data("bert", config, "seqcls", rows=20)
    train(BACKENDS[0], config, data, tmp_path, stop_after=3)
    trainer = make_trainer(make_runner(BACKENDS[0], "bert", config, "seqcls", "float64"), data, tmp_path,
                           **{**SETTINGS, "batch_size": 5})
    with pytest.raises(ValueError, match=r"batch_size \(4 there, 5 now\)"):
        trainer.train(latest_checkpoint(tmp_path))



def test_resume_compares_the_objective_a_checkpoint_recorded(tmp_path):
    """The job's objective settings (task, data options, distillation loss) are compared when the checkpoint has
    them; one written before they were recorded has none to compare."""
    args, objective = TrainArgs(**SETTINGS), {"task": "sst-2", "max_seq_length": 64, "alpha": 0.5}
    recorded = run_settings(args, 20, objective)
    check_settings(tmp_path, recorded, args, 20, objective)
    check_settings(tmp_path, run_settings(args, 20), args, 20, objective)
    with pytest.raises(ResumeError, match=r"cannot resume with other alpha \(0.5 there, 0.9 now\)$"):
        check_settings(tmp_path, recorded, args, 20, {**objective, "alpha": 0.9})
    with pytest.raises(ResumeError, match=r"seed \(42 there, 7 now\), task \(sst-2 there, rte now\)$"):
        check_settings(tmp_path, recorded, TrainArgs(**{**SETTINGS, "seed": 7}), 20, {**objective, "task": "rte"})


def test_best_model_follows_the_main_metric(tmp_path):
    """Evaluations every 2 updates; the best (highest) one's model is in output_dir/best."""
    config = tiny_config("bert")
    data = seeded_data("bert", config, "seqcls", rows=20)
    scores = iter([0.2, 0.7, 0.5, 0.6, 0.1])
    trainer = make_trainer(make_runner(BACKENDS[0], "bert", config, "seqcls", "float64"), data, tmp_path,
                           **{**SETTINGS, "save_steps": 2, "eval_steps": 2})
    trainer.evaluate, trainer.main_metric = (lambda: {"acc": next(scores)}), "acc"
    trainer.train()
    assert (trainer.state.best_step, trainer.state.best_metric) == (4, 0.7)
    best = json.loads((tmp_path / BEST_DIR / STATE_FILE).read_text())
    assert best["step"] == 4 and best["eval"] == {"acc": 0.7}
    assert max_weight_diff(dict(SafetensorsReader(tmp_path / BEST_DIR / "model.safetensors")),
                           dict(SafetensorsReader(tmp_path / "checkpoint-4" / "model.safetensors"))) == 0.0
    assert not list(tmp_path.glob(".*partial"))  # every save was renamed into place


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_runner_trained_by_two_trainers_saves_and_restores_its_moments(backend, tmp_path):
    """A second Trainer on one Runner (a warm-up run, then the measured one) gets a new optimizer whose state
    round-trips like the first's (paddle names each optimizer's moments apart)."""
    config = tiny_config("bert")
    data = seeded_data("bert", config, "seqcls", rows=8)
    runner = make_runner(backend, "bert", config, "seqcls", "float64")
    for steps in (1, 2):
        make_trainer(runner, data, tmp_path, max_steps=steps, batch_size=4, learning_rate=1e-3).train()
    state = runner.optimizer_state()
    assert {int(state[key]) for key in state if key.startswith("step.")} == {2}
    other = make_runner(backend, "bert", config, "seqcls", "float64")
    make_trainer(other, data, tmp_path, max_steps=1, batch_size=4)  # a third optimizer in this process
    other.set_optimizer_state(state)
    restored = other.optimizer_state()
    assert all(np.array_equal(restored[key], state[key]) for key in state if not key.startswith("beta"))
