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


def diff_stats(candidate: np.ndarray, reference: np.ndarray) -> tuple[float, float, float, float]:
    """max |c - r|, mean |c - r|, max |c - r| / max |r|, max |r| (computed in float64)."""
    c = np.asarray(candidate, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    if c.shape != r.shape:
        raise ValueError(f"shape {c.shape} vs reference {r.shape}")
    if r.size == 0:
        return 0.0, 0.0, 0.0, 0.0
    diff = np.abs(c - r)
    scale = float(np.max(np.abs(r)))
    max_abs = float(np.max(diff)) if np.all(np.isfinite(diff)) else math.inf
    mean_abs = float(np.mean(diff)) if math.isfinite(max_abs) else math.inf
    return max_abs, mean_abs, (max_abs / scale if scale else max_abs), scale


def rms_error(candidate: np.ndarray, reference64: np.ndarray) -> float:
    d = np.asarray(candidate, dtype=np.float64) - np.asarray(reference64, dtype=np.float64)
    return float(np.sqrt(np.mean(d * d))) if d.size else 0.0


def float32_errors(candidate32: np.ndarray, reference32: np.ndarray, reference64: np.ndarray) -> tuple[float, float]:
    """rms errors against float64 truth, relative to the rms of the truth: (candidate's, reference's).

    The reference's error is floored at a quarter of float32 unit roundoff (below what one rounding of
    each value costs): a reference that happens to round exactly does not make an honest port look
    infinitely worse.
    """
    if reference64.size == 0:
        return 0.0, 0.0
    truth_rms = math.sqrt(float(np.mean(np.square(np.asarray(reference64, dtype=np.float64)))))
    if truth_rms == 0:
        return rms_error(candidate32, reference64), 0.0
    candidate = rms_error(candidate32, reference64) / truth_rms
    reference = max(rms_error(reference32, reference64) / truth_rms, 0.25 * FLOAT32_UNIT_ROUNDOFF)
    return candidate, reference


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, with 0/0 = 0 and x/0 = inf."""
    return numerator / denominator if denominator else (0.0 if numerator == 0 else math.inf)


def noise_ratio(candidate32: np.ndarray, reference32: np.ndarray, reference64: np.ndarray) -> float:
    """rms error of a float32 result against float64 truth, over the reference's own float32 error."""
    return ratio(*float32_errors(candidate32, reference32, reference64))


def pooled_noise_ratio(results) -> float | None:
    """The noise ratio of a group of tensors, every element weighing the same: sqrt(sum n e^2 / sum n r^2)
    over relative errors e (backend) and r (reference). A one-element tensor such as the loss cannot
    decide it, and no single large tensor dominates by the size of its values."""
    rows = [r for r in results if r.relative_error is not None]
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
