"""Shared dropout masks (backends/_fw/dropout.py): drawn in numpy, the same in every backend."""
from __future__ import annotations

import numpy as np
import pytest

from tasks.__main__ import DROPOUT_MODES
from backends._fw.dropout import MODES, MaskStream, mask_stream

from ..conftest import BACKENDS
from .test_train_support import one_thread  # noqa: F401  (fixture)
from .test_train_support import losses, make_runner, make_trainer, seeded_data, tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")
FRAMEWORK_DROPOUT = {"torch": ("torch.nn", "Dropout"), "paddle": ("paddle.nn", "Dropout"),
                     "tf": ("backends._fw.tf.nn", "Dropout")}


def test_masks_are_seeded_scaled_and_dtype_free():
    stream = MaskStream(7)
    first = stream.mask((64, 128), 0.1)
    second = stream.mask((64, 128), 0.1)
    assert first.dtype == np.float32 and not np.array_equal(first, second)  # the stream moves on
    stream.reseed(7)
    again = stream.mask((64, 128), 0.1, float64=True)
    assert again.dtype == np.float64
    np.testing.assert_array_equal(again != 0, first != 0)  # float64 runs drop the units float32 runs drop
    assert set(np.unique(again)) == {0.0, 1.0 / 0.9}
    assert set(np.unique(first)) == {np.float32(0.0), np.float32(1.0 / 0.9)}
    assert abs((first == 0).mean() - 0.1) < 0.01
    assert not np.array_equal(MaskStream(8).mask((64, 128), 0.1), first)


def test_mask_modes():
    assert DROPOUT_MODES == MODES
    assert mask_stream("native", 0) is None
    assert isinstance(mask_stream("shared", 0), MaskStream)
    with pytest.raises(ValueError, match="dropout_masks"):
        mask_stream("shard", 0)


@pytest.mark.parametrize("family_name", ["bert", "funnel", "bilstm"])
def test_every_dropout_layer_is_shared(backend, family_name):
    """No framework dropout layer is left drawing its own masks, and training mode really drops units."""
    import importlib

    module, name = FRAMEWORK_DROPOUT[backend]
    framework_dropout = getattr(importlib.import_module(module), name)
    config = tiny_config(family_name, dropout=True)
    runner = make_runner(backend, family_name, config, "seqcls", "float64")
    layers = list(runner.model.sublayers(include_self=True) if backend == "paddle" else runner.model.modules())
    dropouts = [layer for layer in layers if isinstance(layer, framework_dropout)]
    assert dropouts and all(type(layer).__name__ == "SharedDropout" for layer in dropouts)
    batch = seeded_data(family_name, config, "seqcls", rows=4)
    outputs = [runner.forward(runner.to_tensors(batch), train=mode)["logits"] for mode in (True, False)]
    train_logits, eval_logits = ((o.detach() if hasattr(o, "detach") else o).numpy() for o in outputs)
    assert np.max(np.abs(train_logits - eval_logits)) > 1e-6


@pytest.mark.skipif(len(BACKENDS) < 2, reason="needs two backends")
def test_native_masks_differ_between_backends(tmp_path):
    """What the shared masks remove: with each framework's own dropout, the same run differs by backend
    (test_train_parity checks that with shared masks it does not)."""
    config = tiny_config("bert", dropout=True)
    data = seeded_data("bert", config, "seqcls", rows=8)
    runs = []
    for backend in BACKENDS[:2]:
        runner = make_runner(backend, "bert", config, "seqcls", "float64", dropout_masks="native")
        trainer = make_trainer(runner, data, tmp_path / backend, max_steps=2, batch_size=4, learning_rate=1e-3)
        trainer.train()
        runs.append(losses(trainer))
    assert np.max(np.abs(runs[0] - runs[1])) > 1e-6
