"""Named, streaming comparison of two result files, tensor by tensor."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Mapping

import numpy as np

from .tolerances import FLOAT32_UNIT_ROUNDOFF
from backends.run import GRAD_PREFIX


@dataclass
class TensorResult:
    backend: str
    tensor: str
    kind: str  # "output" or "grad"
    dtype: str
    layer: str
    max_abs: float
    mean_abs: float
    max_rel: float
    scale: float  # max |reference|
    noise_ratio: float | None = None  # float32 only
    passed: bool = True
    size: int = 0
    # float32 only: rms errors against the float64 truth (the backend's, the reference's floored) over rms truth
    relative_error: float | None = None
    reference_relative_error: float | None = None

    def to_json(self) -> dict:
        return asdict(self)


def kind_of(name: str) -> str:
    return "grad" if name.startswith(GRAD_PREFIX) else "output"


# values per read in the streaming comparison: 8 MB per float64 array, so every tensor of a tiny or base-size
# model is one chunk, and the largest tensors of a full-size model are walked with flat memory
CHUNK_ELEMENTS = 1 << 20


@dataclass
class Stats:
    """What `compare_chunks` finds: `diff_stats`' four numbers and, given the float64 truth, `float32_errors`'."""
    max_abs: float
    mean_abs: float
    max_rel: float
    scale: float
    errors: tuple | None = None


def compare_chunks(chunks, size: int) -> Stats:
    """Stream `size` values as aligned flat chunks (candidate, reference, truth or None): max |c - r|,
    mean |c - r|, max |c - r| / max |r| and max |r| in float64 and, where the truth is given, the rms errors
    of c and r against it relative to its rms (see `float32_errors`). Sums add up chunk by chunk; one chunk
    is computed exactly as numpy's mean of the whole array."""
    if size == 0:
        return Stats(0.0, 0.0, 0.0, 0.0, None)
    diff_max, diff_sum, scales = [], 0.0, []
    squares = {"truth": 0.0, "candidate": 0.0, "reference": 0.0}
    truths = False
    for candidate, reference, truth in chunks:
        c = np.asarray(candidate, dtype=np.float64)
        r = np.asarray(reference, dtype=np.float64)
        diff = np.abs(c - r)
        diff_max.append(float(np.max(diff)))  # NaN propagates: a non-finite difference shows here
        diff_sum += float(np.add.reduce(diff))
        scales.append(float(np.max(np.abs(r))))
        if truth is not None:
            truths = True
            t = np.asarray(truth, dtype=np.float64)
            squares["truth"] += float(np.add.reduce(np.square(t)))
            squares["candidate"] += float(np.add.reduce(np.square(c - t)))
            squares["reference"] += float(np.add.reduce(np.square(r - t)))
    max_abs = max(diff_max) if all(math.isfinite(m) for m in diff_max) else math.inf
    mean_abs = diff_sum / size if math.isfinite(max_abs) else math.inf
    scale = float(np.max(scales))  # NaN propagates as numpy's max of the whole array does
    stats = Stats(max_abs, mean_abs, (max_abs / scale if scale else max_abs), scale)
    if truths:
        stats.errors = _relative_errors(size, **squares)
    return stats


def _relative_errors(size: int, truth: float, candidate: float, reference: float) -> tuple[float, float]:
    truth_rms = math.sqrt(truth / size)
    if truth_rms == 0:
        return math.sqrt(candidate / size), 0.0
    return (math.sqrt(candidate / size) / truth_rms,
            max(math.sqrt(reference / size) / truth_rms, 0.25 * FLOAT32_UNIT_ROUNDOFF))


def _flat(array) -> np.ndarray:
    return np.asarray(array).reshape(-1)


def diff_stats(candidate: np.ndarray, reference: np.ndarray) -> tuple[float, float, float, float]:
    """max |c - r|, mean |c - r|, max |c - r| / max |r|, max |r| (computed in float64)."""
    c, r = np.asarray(candidate), np.asarray(reference)
    if c.shape != r.shape:
        raise ValueError(f"shape {c.shape} vs reference {r.shape}")
    stats = compare_chunks([(_flat(c), _flat(r), None)], r.size)
    return stats.max_abs, stats.mean_abs, stats.max_rel, stats.scale


def float32_errors(candidate32: np.ndarray, reference32: np.ndarray, reference64: np.ndarray) -> tuple[float, float]:
    """rms errors against float64 truth, relative to the rms of the truth: (candidate's, reference's).

    The reference's error is floored at a quarter of float32 unit roundoff (below what one rounding of
    each value costs): a reference that happens to round exactly does not make an honest port look
    infinitely worse.
    """
    if np.size(reference64) == 0:
        return 0.0, 0.0
    return compare_chunks([(_flat(candidate32), _flat(reference32), _flat(reference64))], np.size(reference64)).errors


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, with 0/0 = 0 and x/0 = inf."""
    return numerator / denominator if denominator else (0.0 if numerator == 0 else math.inf)


def noise_ratio(candidate32: np.ndarray, reference32: np.ndarray, reference64: np.ndarray) -> float:
    """rms error of a float32 result against float64 truth, over the reference's own float32 error."""
    return ratio(*float32_errors(candidate32, reference32, reference64))


def pooled_noise_ratio(results) -> float | None:
    """The noise ratio of a group of tensors, every element weighing the same: sqrt(sum n e^2 / sum n r^2)
    over relative errors e (backend) and r (reference). A one-element tensor such as the loss cannot
    decide it, and no single large tensor dominates by the size of its values.

    A tensor the reference's own float32 run cannot resolve (its relative error >= 1) is left out: its true
    value is at or below the float32 rounding of the computation that makes it, e.g. the gradient of an
    attention key bias, which is zero in exact arithmetic (softmax ignores a shift shared by a query's scores);
    relative to a truth of float64 rounding size, both errors are ~1e10 and would decide the pool by the
    luck of two roundings. The float64 run checks such tensors; their own ratios are still reported."""
    rows = [r for r in results if r.relative_error is not None and r.reference_relative_error < 1.0]
    if not rows:
        return None
    numerator = sum(r.size * r.relative_error**2 for r in rows)
    denominator = sum(r.size * r.reference_relative_error**2 for r in rows)
    return math.sqrt(ratio(numerator, denominator))


def common_names(reference: Mapping, candidate: Mapping, backend: str) -> list[str]:
    """Names both results hold, in the reference's order; a name missing on one side is an error."""
    missing = [n for n in reference if n not in candidate]
    extra = [n for n in candidate if n not in reference]
    if missing or extra:
        raise ValueError(f"{backend}: results differ in names: missing {missing[:5]}, unexpected {extra[:5]}")
    return list(reference)
