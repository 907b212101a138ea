"""What counts as the same function: the pass rules of a parity run, as data.

float64 asks "same algorithm?": every tensor within `float64_abs` of the reference, scaled by
max(1, max|reference|) so that O(1) values get the absolute bound.
float32 asks "as accurate as the reference?": a backend's float32 error against the reference's
float64 result, divided by the reference's own float32 error (the noise ratio), must stay below
`float32_noise_ratio`. A ratio of one small tensor is itself noisy, so the rule applies to the ratio
pooled over all elements of each kind (outputs, gradients; see `compare.pooled_noise_ratio`); every
per-tensor ratio is still reported. Optional plain bounds on float32 differences between backends
can be added.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

from backends.errors import BadInput

FLOAT32_UNIT_ROUNDOFF = 2.0**-24


@dataclass(frozen=True)
class Tolerances:
    float64_abs: float = 1e-10
    float32_noise_ratio: float = 2.0
    float32_max_abs: float | None = None
    float32_mean_abs: float | None = None

    def with_overrides(self, items) -> "Tolerances":
        """Apply `--tolerance KEY=VALUE` options (strings), or a mapping {key: value} (the Python API).

        Each value must be a finite number >= 0; an unknown key, a missing `=`, NaN, infinity, a negative
        or non-numeric value is bad input naming the option."""
        pairs = items.items() if isinstance(items, Mapping) else [_split(item) for item in items]
        return replace(self, **{key: _value(key, value) for key, value in pairs})


KNOWN = tuple(f.name for f in fields(Tolerances))


def _split(item: str) -> tuple[str, str]:
    key, sep, value = str(item).partition("=")
    if not sep:
        raise BadInput(f"--tolerance {item!r}: expected KEY=VALUE with KEY one of {', '.join(sorted(KNOWN))}")
    return key.strip(), value.strip()


def _value(key: str, value) -> float:
    if key not in KNOWN:
        raise BadInput(f"--tolerance {key}: unknown key; known: {', '.join(sorted(KNOWN))}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BadInput(f"--tolerance {key}={value!r}: {value!r} is not a number") from None
    if isinstance(value, bool) or not math.isfinite(number) or number < 0:
        raise BadInput(f"--tolerance {key}={value}: must be a finite number >= 0")
    return number
