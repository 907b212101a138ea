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

from dataclasses import dataclass, fields, replace

from backends.errors import BadInput

FLOAT32_UNIT_ROUNDOFF = 2.0**-24


@dataclass(frozen=True)
class Tolerances:
    float64_abs: float = 1e-10
    float32_noise_ratio: float = 2.0
    float32_max_abs: float | None = None
    float32_mean_abs: float | None = None

    def with_overrides(self, items: list[str]) -> "Tolerances":
        """Apply `--tolerance key=value` options."""
        known = {f.name for f in fields(self)}
        changes = {}
        for item in items:
            key, sep, value = item.partition("=")
            if not sep or key not in known:
                raise BadInput(f"--tolerance {item!r}: expected KEY=VALUE with KEY one of {', '.join(sorted(known))}")
            try:
                changes[key] = float(value)
            except ValueError:
                raise BadInput(f"--tolerance {item!r}: {value!r} is not a number") from None
        return replace(self, **changes)
