"""Dropout masks drawn in numpy, so that every backend drops the same units (`--dropout-masks shared`).

Each framework's own dropout draws from its own generator: the same model fine-tuned on the same batches
in three backends then follows three trajectories, apart by the seed-to-seed spread of fine-tuning (1.5
points of SST-2 accuracy measured with MiniLM). With shared masks each step module swaps every dropout
layer of its model for one that multiplies by a mask from a MaskStream. The driver reseeds the stream per
micro-batch (as it reseeds native dropout), and the layers draw in forward order, which the ports share
with the reference, so the three backends compute the same function at every step.
"""
from __future__ import annotations

import numpy as np

MODES = ("shared", "native")


def mask_stream(mode: str, seed: int):
    """The MaskStream of `--dropout-masks shared`; None for native (the framework's own dropout)."""
    if mode not in MODES:
        raise ValueError(f"dropout_masks must be one of {', '.join(MODES)}, not {mode!r}")
    return MaskStream(seed) if mode == "shared" else None


class MaskStream:
    """Scaled keep-masks (0 or 1 / (1 - p)) of the shapes the dropout layers ask for, in call order."""

    def __init__(self, seed: int = 0):
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        self.rng = np.random.Generator(np.random.PCG64(seed))

    def mask(self, shape, p: float, float64: bool = False) -> np.ndarray:
        """A mask of `shape`: float64 for float64 activations, float32 for the others (the framework casts
        it to bfloat16/float16). The draw is float32 in both, so float32 and float64 runs drop the same units."""
        dtype = np.float64 if float64 else np.float32
        keep = self.rng.random(tuple(shape), dtype=np.float32) >= np.float32(p)
        scaled = keep.astype(dtype)
        scaled *= dtype(1.0 / (1.0 - p))
        return scaled


def share_dropout(layers, dropout_class, shared_class, masks: MaskStream) -> None:
    """Turn every `dropout_class` layer among `layers` into a `shared_class` (its subclass whose forward
    multiplies by a mask from `masks`). The layer keeps its place, name and rate; only its class changes,
    so layers held in lists are reached too."""
    for layer in layers:
        if type(layer) is dropout_class:
            layer.__class__ = shared_class
            layer.masks = masks
