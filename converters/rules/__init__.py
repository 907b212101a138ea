"""External-format name rules per family, as data: converters/rules/<family>.py defines `FORMATS`.

Each format's rows map canonical names (transformers PyTorch `state_dict` names) to the names a format
stores, written in dotted notation; the format module turns dots into its own path syntax (h5
`a/b_._0/c:0`, TF1 `a/b_0/c`). A family without a rules module has no converter yet.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Mapping

from backends.errors import BadInput
from backends.weights import RuleSet


@dataclass(frozen=True)
class FormatRules:
    """How one family is stored in one format."""

    rules: RuleSet
    # head -> the class the format's ecosystem loads (written to config "architectures")
    classes: Mapping[str, str]
    # regexes over stored names that are not parameters (buffers, optimizer slots): skipped, reported
    ignore: tuple[str, ...] = ()
    # config keys the ecosystem needs besides the family config
    config: Mapping[str, object] = field(default_factory=dict)


def format_rules(family: str, fmt: str) -> FormatRules:
    """The rules of `family` in format `fmt` ("hf", "tf", "paddle", "tf1bert")."""
    try:
        module = importlib.import_module(f"{__name__}.{family}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{family}":
            raise
        raise BadInput(f"family {family!r} has no converter rules (converters/rules/{family}.py)") from None
    if fmt not in module.FORMATS:
        raise BadInput(f"family {family!r} cannot be stored in format {fmt!r}; "
                       f"formats: {', '.join(sorted(module.FORMATS))}")
    return module.FORMATS[fmt]


def family_of_class(fmt: str, class_name: str, families) -> str | None:
    """The family whose `fmt` rules name `class_name` (for configs without model_type)."""
    for name in families:
        try:
            if class_name in format_rules(name, fmt).classes.values():
                return name
        except BadInput:
            continue
    return None
