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

`--dropout-masks device` (HashStream) is the same idea computed where the model runs: numpy's generators
draw on the host, and each layer's mask then costs a host-to-device copy of a tensor the size of its input
(on a GPU, a synchronous copy per dropout layer and step). Its masks are a counter-based hash instead: the
24 high bits of lowbias32 (Chris Wellons' 32-bit integer hash) of a key made of the micro-batch seed, the
example's position r in the micro-batch, the row j of that example, the layer call's index in forward
order and the element's index in the row, computed with the framework's int64 tensor ops on the model's
device. Every value is an exact integer below 2**49, so numpy, torch, paddle and tf, on CPU or GPU, compute
the same masks (another scheme than `shared`'s numpy generators, with the same keying: per example
position, so data-parallel processes draw what one process draws). The only host-to-device copy is the
per-row keys (a few integers per row), once per micro-batch.
"""
from __future__ import annotations

import math
import operator

import numpy as np

MODES = ("shared", "native", "device")
# per family: attribute names of the dropout layers whose input has no batch axis (one mask serves every example)
BATCH_FREE = {"funnel": ("sin_dropout", "cos_dropout")}


def mask_stream(mode: str, seed: int, ops=None):
    """The MaskStream of `--dropout-masks shared`, the HashStream of `device` (computed with `ops`, a framework's
    MaskOps on the model's device); None for native (the framework's own dropout)."""
    if mode not in MODES:
        raise ValueError(f"dropout_masks must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "native":
        return None
    return MaskStream(seed) if mode == "shared" else HashStream(ops or NumpyOps(), seed)


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


# ---- --dropout-masks device: a counter-based hash on the model's device

WORD = 2 ** 32
HALF = 2 ** 16
DRAW_BITS = 24  # a draw is the hash's 24 high bits, k / 2**24 a float32 uniform in [0, 1) as numpy's random()
BATCH_FREE_KEY = WORD - 1  # stands for the example position of a layer whose input has no batch axis


def mul32(x, constant: int):
    """(x * constant) mod 2**32 for 0 <= x < 2**32 (ints or int64 tensors): the constant in two 16-bit halves, so
    that no product passes 2**49 (int64 tensors never overflow, in any framework)."""
    low, high = constant % HALF, constant // HALF
    return (x * low + (x * high) % HALF * HALF) % WORD


def lowbias32(x, xor=operator.xor):
    """Chris Wellons' lowbias32 (hash-prospector): a bijection of the 32-bit integers with low bias. Shifts are
    floor divisions (x >= 0), so plain ints and every framework's int64 tensors compute it alike; `xor` is the
    framework's bitwise xor."""
    x = xor(x, x // HALF)
    x = mul32(x, 0x7FEB352D)
    x = xor(x, x // 2 ** 15)
    x = mul32(x, 0x846CA68B)
    return xor(x, x // HALF)


def rows_per_example(batch: int, examples: int) -> int:
    """The rows of each example in a dropout layer's input of `batch` rows (multiple choice: the choices); a
    ValueError when they do not divide."""
    if not examples or batch % examples:
        raise ValueError(f"a dropout layer's input has {batch} rows, not a multiple of the {examples} "
                         "examples of the batch; if it has no batch axis, name the layer in "
                         "backends/_fw/dropout.py BATCH_FREE")
    return batch // examples


def row_key(seed_key, position, row, xor=operator.xor):
    """The key of row `row` of the example at `position` in a micro-batch whose seed key is `seed_key`:
    lowbias32(lowbias32(seed_key ^ position) ^ row) (ints, or int64 arrays or tensors with the framework's `xor`)."""
    return lowbias32(xor(lowbias32(xor(seed_key, position), xor), row), xor)


class NumpyOps:
    """The MaskOps of a HashStream in numpy: the scheme's reference, and what the tests compare each framework's
    device ops with. A framework's MaskOps (in its train.py) has the same members, on the model's device."""

    def constant(self, array: np.ndarray):
        """A host array as a tensor on the device (the per-row keys; a `shared` numpy mask)."""
        return array

    def arange(self, n: int):
        """0 .. n-1 as int64 on the device."""
        return np.arange(n, dtype=np.int64)

    xor = staticmethod(np.bitwise_xor)
    reshape = staticmethod(np.reshape)

    def scaled(self, keep, scale: float, float64: bool):
        """keep (bool) * scale, in float64 or float32."""
        dtype = np.float64 if float64 else np.float32
        out = keep.astype(dtype)
        out *= dtype(scale)
        return out


class HashStream:
    """The masks of `--dropout-masks device`: MaskStream's calls, computed by `ops` where the model runs.

    Key of element e of row j of the example at position r, in the c-th dropout call of a micro-batch seeded s:
    row = lowbias32(lowbias32(lowbias32(lowbias32(s mod 2**32) ^ (s // 2**32)) ^ r) ^ j) (on the host, once per
    micro-batch), then draw = lowbias32(lowbias32(row ^ c) ^ e) // 2**8 (on the device); a layer without a batch
    axis uses r = 2**32 - 1, j = 0 and e over all its elements. The unit is kept when draw >= ceil(p * 2**24)."""

    def __init__(self, ops, seed: int = 0):
        self.ops = ops
        self.reseed(seed)

    def reseed(self, seed: int, rows=None) -> None:
        """Start the masks of a micro-batch: `rows` are the positions in it of the examples this process holds
        (None: all of them)."""
        self.seed = seed
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self.calls = 0
        self.seed_key = lowbias32(lowbias32(seed % WORD) ^ (seed // WORD % WORD))
        self.row_keys = {}  # batch size -> the per-row keys on the device

    def keys(self, batch: int):
        """The per-row keys of a batch axis of `batch` rows (k rows per example: multiple choice's [B * C])."""
        if batch not in self.row_keys:
            rows = self.rows if self.rows is not None else np.arange(batch, dtype=np.int64)
            per_example = rows_per_example(batch, len(rows))
            positions = np.repeat(rows, per_example)
            within = np.tile(np.arange(per_example, dtype=np.int64), len(rows))
            keys = row_key(self.seed_key, positions, within, np.bitwise_xor)
            self.row_keys[batch] = self.ops.constant(np.ascontiguousarray(keys, dtype=np.int64))
        return self.row_keys[batch]

    def batch_free_keys(self):
        """The one row key of a layer whose input has no batch axis."""
        return self.ops.constant(np.asarray([row_key(self.seed_key, BATCH_FREE_KEY, 0)], dtype=np.int64))

    def mask(self, shape, p: float, float64: bool = False, batch_free: bool = False):
        """A scaled keep-mask of `shape` (0 or 1 / (1 - p)), float64 or float32, on the device."""
        ops, call = self.ops, self.calls
        self.calls += 1
        shape = [int(n) for n in shape]
        if batch_free or not shape:
            keys, per_row = self.batch_free_keys(), math.prod(shape)
        else:
            keys, per_row = self.keys(shape[0]), math.prod(shape[1:])
        calls = lowbias32(ops.xor(keys, call), ops.xor)
        hashed = lowbias32(ops.xor(ops.reshape(calls, [-1, 1]), ops.reshape(ops.arange(per_row), [1, -1])), ops.xor)
        keep = hashed // 2 ** (32 - DRAW_BITS) >= math.ceil(p * 2 ** DRAW_BITS)
        return ops.scaled(ops.reshape(keep, shape), 1.0 / (1.0 - p), float64)


class LayerMasks:
    """A dropout layer's view of the MaskStream or HashStream: the same `mask` call, knowing whether its input
    has a batch axis, giving a tensor on the device (`ops.constant` moves a numpy mask there)."""

    def __init__(self, stream, batch_free: bool, ops=None):
        self.stream, self.batch_free, self.ops = stream, batch_free, ops or NumpyOps()

    def mask(self, shape, p: float, float64: bool = False):
        mask = self.stream.mask(shape, p, float64, self.batch_free)
        return self.ops.constant(mask) if isinstance(mask, np.ndarray) else mask


def share_dropout(named_layers, dropout_class, shared_class, masks, family: str = "", ops=None) -> None:
    """Turn every `dropout_class` layer among `named_layers` ((dotted name, layer) pairs) into a `shared_class`
    (its subclass whose forward multiplies by a mask from `masks`, a MaskStream or HashStream; `ops`: the
    framework's MaskOps). The layer keeps its place, name and rate; only its class changes, so layers held in
    lists are reached too."""
    batch_free = BATCH_FREE.get(family, ())
    for name, layer in named_layers:
        if type(layer) is dropout_class:
            layer.__class__ = shared_class
            layer.masks = LayerMasks(masks, name.rpartition(".")[2] in batch_free, ops)
