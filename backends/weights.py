"""Weight rules as data: rows of (canonical pattern, target pattern, action), and key accounting.

Canonical names are the transformers PyTorch `state_dict` names of a family. A `RuleSet` maps each
canonical name and array to a target format (a port's own layout, PaddleNLP's names, Keras h5 names)
and back; the first row whose pattern matches the whole name wins. The same rows serve the
converters, the parity harness (load weights, map gradients back) and the tests.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from ._fw import CANONICAL_LINEAR_KERNEL, FRAMEWORKS
from .errors import WeightsError
from .transpose import transpose


def _transpose(array: np.ndarray) -> np.ndarray:
    """The last two axes swapped, as a new C-contiguous array (a large 2-D one by `backends.transpose`; small
    ones, and the zero-byte arrays that shapes are computed on, by numpy, which costs them nothing)."""
    if array.ndim == 2 and array.nbytes >= FAST_TRANSPOSE_BYTES:
        return transpose(array)
    return np.ascontiguousarray(np.swapaxes(array, -1, -2))


FAST_TRANSPOSE_BYTES = 1 << 20


def _identity(array: np.ndarray) -> np.ndarray:
    return array


# action name -> (canonical to target, target to canonical)
ACTIONS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]] = {
    "identity": (_identity, _identity),
    # Linear/Dense kernels: torch stores [out, in]; paddle Linear and Keras Dense store [in, out]
    "transpose": (_transpose, _transpose),
}


@dataclass(frozen=True)
class Rule:
    pattern: str  # regex matched against the whole canonical name
    target: str  # re.sub template for the target name
    action: str = "identity"

    def __post_init__(self):
        if self.action not in ACTIONS:
            raise ValueError(f"rule {self.pattern!r}: unknown action {self.action!r}")


class RuleSet:
    """Ordered rows; the first rule matching a canonical name decides its target name and action."""

    def __init__(self, rules: Sequence[Rule], name: str = "rules"):
        self.name = name
        self.rules = tuple(rules)
        self._compiled = [(re.compile(r.pattern), r) for r in self.rules]
        self._found = {}  # canonical name -> (target name, action): the rows never change, and opening a
        # checkpoint asks for every name once per candidate head (re's expand parses its template each time)

    def rule_for(self, canonical: str) -> tuple[str, str]:
        """(target name, action name) of one canonical name."""
        found = self._found.get(canonical)
        if found is not None:
            return found
        for regex, rule in self._compiled:
            match = regex.fullmatch(canonical)
            if match:  # expand, not sub: sub would also rewrite a second, empty match at the end
                found = self._found[canonical] = match.expand(rule.target), rule.action
                return found
        raise WeightsError(f"{self.name}: no rule maps parameter {canonical}")

    def to_target(self, canonical: str, array: np.ndarray) -> tuple[str, np.ndarray]:
        target, action = self.rule_for(canonical)
        return target, ACTIONS[action][0](array)

    def to_canonical(self, canonical: str, array: np.ndarray) -> np.ndarray:
        """Bring `array`, stored in the target layout of `canonical`, back to the canonical layout."""
        return ACTIONS[self.rule_for(canonical)[1]][1](array)

    def target_names(self, canonical_names: Iterable[str]) -> dict[str, str]:
        """target name -> canonical name, for every canonical name given (to invert a checkpoint)."""
        mapping = {}
        for canonical in canonical_names:
            target = self.rule_for(canonical)[0]
            if target in mapping:
                raise WeightsError(f"{self.name}: {mapping[target]} and {canonical} both map to {target}")
            mapping[target] = canonical
        return mapping


SAME_NAMES = Rule(r"(.*)", r"\1")


def port_rules(family: str, linear_kernels: str, own_rows: Mapping[str, Sequence[Rule]] | None = None) -> dict:
    """framework key -> RuleSet of that framework's port, from what the family declares once and what each
    framework declares (backends/_fw/__init__.py): the ports keep the canonical names, and the parameters
    matching `linear_kernels` (a regex of canonical names) are transposed for a framework whose Linear kernel
    layout is not the canonical [out, in]. `own_rows` adds rows a port needs for its own layers (the TF
    BiLSTM's Keras-layout LSTM) after those."""
    own_rows = own_rows or {}
    unknown = set(own_rows) - set(FRAMEWORKS)
    if unknown:
        raise ValueError(f"{family} port rules: unknown framework {', '.join(sorted(unknown))}")
    rules = {}
    for key, framework in FRAMEWORKS.items():
        transposed = framework.linear_kernel != CANONICAL_LINEAR_KERNEL
        rows = [Rule(linear_kernels, r"\g<0>", "transpose")] if transposed else []
        rules[key] = RuleSet(rows + list(own_rows.get(key, ())) + [SAME_NAMES], f"{family} {key} port")
    return rules


def check_keys(expected: Iterable[str], found: Iterable[str], source: str,
               allow_missing: Sequence[str] = (), allow_unexpected: Sequence[str] = ()) -> None:
    """Fail, naming the keys, unless every expected key is found and nothing else is (allow-lists are regexes)."""
    expected, found = set(expected), set(found)

    def unallowed(keys, allowed):
        return sorted(k for k in keys if not any(re.fullmatch(p, k) for p in allowed))

    missing = unallowed(expected - found, allow_missing)
    unexpected = unallowed(found - expected, allow_unexpected)
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {_short(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {_short(unexpected)}")
    if problems:
        raise WeightsError(f"{source}: " + "; ".join(problems))


def check_shapes(shapes: Mapping[str, tuple], arrays: Mapping, source: str, shape_of=None) -> None:
    """Fail on the first array whose shape differs from the expected canonical shape."""
    shape_of = shape_of or (lambda name: tuple(np.shape(arrays[name])))
    for name, shape in shapes.items():
        got = tuple(shape_of(name))
        if got != tuple(shape):
            raise WeightsError(f"{source}: {name} has shape {list(got)}, the config needs {list(shape)}")


def check_finite(name: str, array: np.ndarray, source: str) -> None:
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise WeightsError(f"{source}: {name} holds NaN or Inf values")


def _short(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... and {len(keys) - limit} more" if len(keys) > limit else "")


def perturb_constants(params: Mapping[str, np.ndarray], rng: np.random.Generator, scale: float = 0.1) -> dict:
    """Add noise to tensors whose init is constant (zero biases, unit LayerNorm weights).

    Parity weights must exercise every parameter: a zero bias or a unit scale hides a missing or
    swapped term.
    """
    out = {}
    for name, array in params.items():
        if array.size and np.all(array == array.flat[0]):
            array = array + scale * rng.standard_normal(array.shape)
        out[name] = array
    return out
