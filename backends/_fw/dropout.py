"""Dropout masks drawn in numpy, so that every backend drops the same units (`--dropout-masks shared`).

Each framework's own dropout draws from its own generator: the same model fine-tuned on the same batches
in three backends then follows three trajectories, apart by the seed-to-seed spread of fine-tuning (1.5
points of SST-2 accuracy measured with MiniLM). With shared masks each step module swaps every dropout
layer of its model for one that multiplies by a mask from a MaskStream. The driver reseeds the stream per
micro-batch (as it reseeds native dropout), and the layers draw in forward order, which the ports share
with the reference, so the three backends compute the same function at every step.

Each example's rows of a mask come from a generator keyed by the micro-batch's seed and the example's
position in the micro-batch, not by where the example sits in the tensor: a data-parallel process that
holds positions 4..7 of a micro-batch of 8 draws for them what one process holding all 8 draws
(tasks/train/parallel.py). Layers whose input has no batch axis (Funnel's position tables) draw one mask
for the whole batch from a generator keyed by the seed alone, so every process draws the same one.
"""
from __future__ import annotations

import numpy as np

MODES = ("shared", "native")
# per family: attribute names of the dropout layers whose input has no batch axis (one mask serves every example)
BATCH_FREE = {"funnel": ("sin_dropout", "cos_dropout")}


def mask_stream(mode: str, seed: int):
    """The MaskStream of `--dropout-masks shared`; None for native (the framework's own dropout)."""
    if mode not in MODES:
        raise ValueError(f"dropout_masks must be one of {', '.join(MODES)}, not {mode!r}")
    return MaskStream(seed) if mode == "shared" else None


def native_seed(n: int, rows=None) -> int:
    """The framework seed of `--dropout-masks native` for micro-batch seed `n` when this process holds `rows`
    (positions in the micro-batch): `n` for the process holding the first rows (one process: always), another
    seed for each other shard, so that processes do not drop the same units of different examples."""
    if rows is None or len(rows) == 0 or int(rows[0]) == 0:
        return n
    return int(np.random.SeedSequence([n, int(rows[0])]).generate_state(1)[0] >> 1)


class MaskStream:
    """Scaled keep-masks (0 or 1 / (1 - p)) of the shapes the dropout layers ask for, in call order."""

    def __init__(self, seed: int = 0):
        self.reseed(seed)

    def reseed(self, seed: int, rows=None) -> None:
        """Start the masks of a micro-batch: `rows` are the positions in it of the examples this process holds
        (None: all of them, 0, 1, ...)."""
        self.seed = seed
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self.row_generators = {}
        self.batch_free_generator = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 0])))

    def row_generator(self, key: tuple) -> np.random.Generator:
        """The generator of row j of example r, key (r, j); each is used by the same calls in every process."""
        if key not in self.row_generators:
            self.row_generators[key] = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, 1, *key])))
        return self.row_generators[key]

    def draws(self, shape: tuple, batch_free: bool) -> np.ndarray:
        """Uniform float32 draws of `shape`: row by row from each example's generator, or at once for a
        batch-free tensor. A batch axis of k rows per example (multiple choice flattens [B, C] into B * C
        rows) draws row j of example r from generator (r, j)."""
        if batch_free or not shape:
            return self.batch_free_generator.random(shape, dtype=np.float32)
        rows = self.rows if self.rows is not None else np.arange(shape[0])
        if not len(rows) or shape[0] % len(rows):
            raise ValueError(f"a dropout layer's input has shape {list(shape)}, whose first axis is not a multiple "
                             f"of the {len(rows)} examples of the batch; if it has no batch axis, name the layer in "
                             "backends/_fw/dropout.py BATCH_FREE")
        per_example = shape[0] // len(rows)
        out = np.empty(shape, dtype=np.float32)
        for index in range(shape[0]):
            key = (int(rows[index // per_example]), index % per_example)
            out[index] = self.row_generator(key).random(shape[1:], dtype=np.float32)
        return out

    def mask(self, shape, p: float, float64: bool = False, batch_free: bool = False) -> np.ndarray:
        """A mask of `shape`: float64 for float64 activations, float32 for the others (the framework casts
        it to bfloat16/float16). The draw is float32 in both, so float32 and float64 runs drop the same units."""
        dtype = np.float64 if float64 else np.float32
        keep = self.draws(tuple(int(n) for n in shape), batch_free) >= np.float32(p)
        scaled = keep.astype(dtype)
        scaled *= dtype(1.0 / (1.0 - p))
        return scaled


class LayerMasks:
    """A dropout layer's view of the MaskStream: the same `mask` call, knowing whether its input has a batch axis."""

    def __init__(self, stream: MaskStream, batch_free: bool):
        self.stream, self.batch_free = stream, batch_free

    def mask(self, shape, p: float, float64: bool = False) -> np.ndarray:
        return self.stream.mask(shape, p, float64, self.batch_free)


def share_dropout(named_layers, dropout_class, shared_class, masks: MaskStream, family: str = "") -> None:
    """Turn every `dropout_class` layer among `named_layers` ((dotted name, layer) pairs) into a `shared_class`
    (its subclass whose forward multiplies by a mask from `masks`). The layer keeps its place, name and rate;
    only its class changes, so layers held in lists are reached too."""
    batch_free = BATCH_FREE.get(family, ())
    for name, layer in named_layers:
        if type(layer) is dropout_class:
            layer.__class__ = shared_class
            layer.masks = LayerMasks(masks, name.rpartition(".")[2] in batch_free)
