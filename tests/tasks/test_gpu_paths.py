"""The GPU paths, checked on CPU where the frameworks allow: device-side dropout masks (`--dropout-masks device`),
float16/bfloat16 autocast with a loss scaler (`--fp16`, `--bf16`), TF32 off for parity runs, and the one-line
refusals of what a framework cannot do. bench/gpu_check.py runs the torch paths on a real GPU."""
from __future__ import annotations

import numpy as np
import pytest

from backends import framework
from backends._fw.amp import AUTOCAST_DEVICES, AutocastError, check_autocast
from backends._fw.dropout import HashStream, NumpyOps, lowbias32, mask_stream
from tasks.__main__ import main

from ..conftest import BACKENDS
from .test_train_support import one_thread  # noqa: F401  (fixture)
from .test_train_support import (losses, make_trainer, max_weight_diff, seeded_data, tiny_config, write_glue,
                                 write_model_folder)

pytestmark = pytest.mark.usefixtures("one_thread")
SHAPES = [((4, 3, 5), 0.1, False, False), ((4, 7), 0.5, True, False), ((6, 6), 0.3, False, True), ((8, 2), 0.2, False, False)]


def mask_ops(backend):
    """The backend's MaskOps on its CPU device."""
    module = pytest.importorskip(f"backends._fw.{backend}.train")
    if backend == "torch":
        import torch

        return module.MaskOps(torch.device("cpu"))
    return module.MaskOps()


def as_numpy(tensor):
    return tensor if isinstance(tensor, np.ndarray) else np.asarray(tensor.numpy())


def draw(stream, shapes=SHAPES):
    return [as_numpy(stream.mask(shape, p, float64, batch_free)) for shape, p, float64, batch_free in shapes]


# ---- device-side dropout masks -------------------------------------------------------------------------------------

def test_lowbias32_is_the_published_hash():
    # values of Chris Wellons' C function (hash-prospector, lowbias32), computed with uint32 arithmetic
    def reference(x):
        x = np.uint32(x)
        with np.errstate(over="ignore"):
            x ^= x >> np.uint32(16)
            x *= np.uint32(0x7FEB352D)
            x ^= x >> np.uint32(15)
            x *= np.uint32(0x846CA68B)
            x ^= x >> np.uint32(16)
        return int(x)

    for value in (0, 1, 2, 12345, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1):
        assert lowbias32(value) == reference(value)
    array = np.array([0, 1, 2 ** 32 - 1], dtype=np.int64)
    assert lowbias32(array, np.bitwise_xor).tolist() == [reference(v) for v in array]


def test_device_masks_equal_the_numpy_scheme(backend):
    """Each framework's integer ops compute the numpy reference's masks exactly, dtype included."""
    expected = draw(HashStream(NumpyOps(), 5))
    got = draw(mask_stream("device", 5, mask_ops(backend)))
    for want, have in zip(expected, got):
        assert have.dtype == want.dtype
        np.testing.assert_array_equal(have, want)


def test_device_masks_are_deterministic_and_keyed_by_example_position():
    stream = HashStream(NumpyOps(), 7)
    first = draw(stream)
    assert not np.array_equal(first[0], as_numpy(stream.mask((4, 3, 5), 0.1)))  # each call draws anew
    stream.reseed(7)
    np.testing.assert_array_equal(draw(stream)[0], first[0])  # the same seed, the same masks
    assert not np.array_equal(draw(HashStream(NumpyOps(), 8))[0], first[0])
    # a process holding positions 2 and 3 of a micro-batch of 4 draws rows 2 and 3 of one process's masks
    stream.reseed(7, rows=[0, 1, 2, 3])  # the driver names the rows of a micro-batch (one process: all of them)
    first = draw(stream)
    part = HashStream(NumpyOps(), 7)
    part.reseed(7, rows=[2, 3])
    half = draw(part, [((2, 3, 5), 0.1, False, False), ((2, 7), 0.5, True, False), ((6, 6), 0.3, False, True),
                       ((4, 2), 0.2, False, False)])
    np.testing.assert_array_equal(half[0], first[0][2:])
    np.testing.assert_array_equal(half[1], first[1][2:])
    np.testing.assert_array_equal(half[2], first[2])  # no batch axis: the same mask in every process
    np.testing.assert_array_equal(half[3], first[3][4:])  # 2 rows per example (multiple choice): rows 4..7
    # float64 runs drop the units float32 runs drop; the rate and the scale are dropout's
    stream.reseed(3)
    single = as_numpy(stream.mask((64, 256), 0.1))
    stream.reseed(3)
    double = as_numpy(stream.mask((64, 256), 0.1, float64=True))
    np.testing.assert_array_equal(single != 0, double != 0)
    assert set(np.unique(double)) == {0.0, 1.0 / 0.9} and abs((single == 0).mean() - 0.1) < 0.005
    with pytest.raises(ValueError, match="BATCH_FREE"):
        part.mask((3, 4), 0.1)


def test_device_masks_train_the_same_in_every_backend(tmp_path):
    """--dropout-masks device: with dropout on, every backend computes the same 3 updates (float64)."""
    config = tiny_config("bert", dropout=True)
    data = seeded_data("bert", config, "seqcls", rows=8)
    results = {}
    for backend in BACKENDS:
        from .test_train_support import make_runner

        runner = make_runner(backend, "bert", config, "seqcls", "float64", dropout_masks="device")
        trainer = make_trainer(runner, data, tmp_path / backend, max_steps=3, batch_size=4, learning_rate=1e-3)
        trainer.train()
        results[backend] = (losses(trainer), runner.get_params())
    reference_losses, reference_params = results[BACKENDS[0]]
    for backend, (run_losses, params) in results.items():
        np.testing.assert_allclose(run_losses, reference_losses, rtol=0, atol=1e-10)
        assert max_weight_diff(params, reference_params) <= 1e-8
    # dropout really acts: a training-mode forward pass differs from the eval-mode one
    runner = make_runner(BACKENDS[0], "bert", config, "seqcls", "float64", dropout_masks="device")
    runner.seed(1)
    tensors = runner.to_tensors(data)
    train, evaluation = (as_numpy(runner.forward(tensors, train=mode)["logits"].detach()
                                  if BACKENDS[0] == "torch" else runner.forward(tensors, train=mode)["logits"])
                         for mode in (True, False))
    assert np.max(np.abs(train - evaluation)) > 1e-6


# ---- autocast and the loss scaler (torch on CPU; paddle's act on GPU only, tf has none) ------------------------

def torch_runner(**options):
    pytest.importorskip("torch")
    from tasks.train import runner_class

    config = tiny_config("bert")
    params = __import__("backends").family("bert").init_params(config, "seqcls", np.random.default_rng(0))
    return runner_class("torch")("bert", config, "seqcls", params, dtype="float32", **options), config


@pytest.mark.parametrize("option, dtype_name", [("fp16", "float16"), ("bf16", "bfloat16")])
def test_torch_autocast_trains_on_cpu(option, dtype_name, tmp_path):
    import torch

    runner, config = torch_runner(**{option: True})
    data = seeded_data("bert", config, "seqcls", rows=8)
    with runner.autocast():
        logits = runner.forward(runner.to_tensors(data), train=False)["logits"]
    assert logits.dtype == getattr(torch, dtype_name)  # the matrix products ran in the half type
    assert (runner.scaler is not None) == (option == "fp16")
    before = {name: np.array(value) for name, value in runner.get_params().items()}  # copies, not views
    trainer = make_trainer(runner, data, tmp_path, max_steps=3, batch_size=4, learning_rate=1e-3)
    metrics = trainer.train()
    assert np.isfinite(losses(trainer)).all() and metrics["train_overflow_skipped_updates"] == 0
    assert max_weight_diff(runner.get_params(), before) > 1e-4
    assert runner.predict(data)["logits"].dtype == np.float32


def test_fp16_loss_scaler_skips_an_overflowing_update(tmp_path):
    """An update whose scaled gradients overflow is skipped (no AdamW step), counted and logged, and the scale
    halved; the next update applies."""
    from tasks.train.losses import LOSSES

    runner, config = torch_runner(fp16=True)
    data = seeded_data("bert", config, "seqcls", rows=8)
    calls = []

    def overflowing_once(ops, outputs, batch):
        loss = LOSSES["classification"](ops, outputs, batch)
        calls.append(1)
        return loss * 1e36 if len(calls) == 1 else loss  # times the 2**16 scale: past float32's 3.4e38

    trainer = make_trainer(runner, data, tmp_path, max_steps=2, batch_size=8, learning_rate=1e-3)
    trainer.loss_fn = overflowing_once
    scale = runner.scaler.get_scale()
    metrics = trainer.train()
    assert metrics["train_overflow_skipped_updates"] == 1 and metrics["train_skipped_updates"] == 0
    first, second = trainer.state.log_history
    assert first["skipped"] == "gradient overflow (fp16 loss scaler)" and "grad_norm" not in first
    assert np.isfinite(second["grad_norm"]) and np.isfinite(second["loss"])
    assert runner.scaler.get_scale() == scale / 2
    steps = {key: int(value) for key, value in runner.optimizer_state().items() if key.startswith("step.")}
    assert steps and set(steps.values()) == {1}  # one AdamW update of every parameter, not two
    assert np.isfinite(np.concatenate([v.ravel() for v in runner.get_params().values()])).all()


def test_autocast_rules():
    assert AUTOCAST_DEVICES == {"torch": ("cpu", "gpu"), "paddle": ("gpu",), "tf": ()}
    check_autocast("torch", "cpu", "float32", fp16=True)
    check_autocast("paddle", "gpu", "float32", bf16=True)
    for args, message in [(("torch", "cpu", "float32", True, True), "--bf16 and --fp16 exclude each other"),
                          (("torch", "gpu", "float64", False, True), "--fp16 autocasts a float32 model; --dtype float64"),
                          (("paddle", "cpu", "float32", True, False), "--bf16 with --backend paddle --device cpu"),
                          (("tf", "gpu", "float32", False, True), "--fp16 with --backend tf --device gpu")]:
        with pytest.raises(AutocastError, match=message):
            check_autocast(*args)


@pytest.mark.parametrize("extra, message", [
    (["--fp16", "--dtype", "float64"], "--fp16 autocasts a float32 model; --dtype float64 is for exact runs"),
    (["--fp16", "--bf16"], "--bf16 and --fp16 exclude each other"),
    (["--bf16", "--backend", "tf"], "--bf16 with --backend tf --device cpu: the tf ports"),
    (["--fp16", "--backend", "paddle"], "--fp16 with --backend paddle --device cpu: paddle.amp"),
])
def test_bad_autocast_options_exit_2_in_one_line(extra, message, tmp_path, capsys, monkeypatch):
    import tasks.train.job

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the check")

    monkeypatch.setattr(tasks.train.job, "load_model", refuse)
    model, data = write_model_folder(tmp_path / "model", "bert"), write_glue(tmp_path / "data")
    argv = ["finetune", "--task", "sst-2", "--model", model, "--backend", BACKENDS[0], "--data-dir", data,
            "--output-dir", tmp_path / "out", "--do-train", "--no-progress", *extra]
    assert main([str(a) for a in argv]) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("note: ")]
    assert len(err) == 1 and message in err[0] and ": error: " in err[0]
    assert not (tmp_path / "out").exists()


# ---- TF32 off for parity runs ----------------------------------------------------------------------------------

def test_parity_runs_turn_tf32_off(backend, monkeypatch):
    """run_backend (every parity worker and --verify) calls the framework's no_tf32 before it builds the model,
    and the switches it sets read off afterwards."""
    from backends import family
    from backends.run import run_backend

    adapter = framework(backend)
    calls = []
    original = adapter.no_tf32
    monkeypatch.setattr(adapter, "no_tf32", lambda: (calls.append(1), original()))
    spec = family("bert")
    config = spec.shrink(next(iter(spec.presets.values())).config)
    params = spec.init_params(config, "seqcls", np.random.default_rng(0))
    inputs = spec.make_inputs(config, "seqcls", 2, 6, np.random.default_rng(1))
    results = run_backend("bert", backend, config, "seqcls", params, inputs, "float32", backward=False)
    assert calls == [1] and np.isfinite(results["logits"]).all()
    if backend == "torch":
        import torch

        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert torch.get_float32_matmul_precision() == "highest"
    elif backend == "tf":
        import tensorflow as tf

        assert not tf.config.experimental.tensor_float_32_execution_enabled()
    else:
        import os

        assert os.environ["NVIDIA_TF32_OVERRIDE"] == "0"


def test_fp16_resume_continues_the_loss_scale(tmp_path):
    """A checkpoint holds the loss scaler's state: a resumed --fp16 run has the scale the interrupted one reached
    (halved by an overflow at its first update) and ends with the uninterrupted run's weights."""
    from tasks.train.losses import LOSSES

    def run(output_dir, resume=None):
        runner, config = torch_runner(fp16=True)
        data = seeded_data("bert", config, "seqcls", rows=8)
        trainer = make_trainer(runner, data, output_dir, max_steps=4, batch_size=8, learning_rate=1e-3, save_steps=2)

        def overflow_at_first_update(ops, outputs, batch):
            loss = LOSSES["classification"](ops, outputs, batch)
            return loss * 1e36 if trainer.state.step == 0 else loss

        trainer.loss_fn = overflow_at_first_update
        trainer.train(resume)
        return runner, trainer

    full, _ = run(tmp_path / "full")  # writes checkpoint-2 and checkpoint-4
    resumed, trainer = run(tmp_path / "resumed", resume=tmp_path / "full" / "checkpoint-2")
    assert resumed.scaler.get_scale() == full.scaler.get_scale() == 2.0 ** 15  # without the state: 2 ** 16
    assert trainer.state.overflow_skipped == 1
    assert max_weight_diff(resumed.get_params(), full.get_params()) == 0.0
