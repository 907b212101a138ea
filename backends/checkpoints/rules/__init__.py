"""External-format name rules per family, as data: backends/checkpoints/rules/<family>.py defines `FORMATS`.

Each format's rows map canonical names (transformers PyTorch `state_dict` names) to the names the format
stores: PaddleNLP state-dict keys, transformers' Keras weight names below the model scope
(`bert/encoder/layer_._0/output/dense/kernel:0`), Google's TF1 variable names. Rows kept in
`backends/<family>/weights.py` are used as they are. A family without a rules module has no converter.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Mapping

import backends
from backends.errors import BadInput
from backends.weights import Rule, RuleSet


@dataclass(frozen=True)
class FormatRules:
    """How one family is stored in one format."""

    rules: RuleSet
    # head -> the class the format's ecosystem loads (written to config "architectures")
    classes: Mapping[str, str]
    # regexes over stored names that are not parameters (buffers, optimizer slots): skipped, reported
    ignore: tuple[str, ...] = ()
    # config keys the ecosystem sets besides the family config: written as given; on reading, another
    # value is refused (our ports implement only this one)
    config: Mapping[str, object] = field(default_factory=dict)
    # head read unless --head names another (else the head the checkpoint fits best)
    default_head: str | None = None
    # Keras h5: layer -> regex of stored names it lists too (a layer holding a shared sublayer, e.g. an
    # MLM head holding the tied input embeddings, lists that sublayer's weights)
    shared: Mapping[str, str] = field(default_factory=dict)
    # head -> regex of the optional parameters (`FamilySpec.optional_shapes`) the ecosystem's class builds:
    # absent from a checkpoint, the class initialises them (a note); held but not built, it reports them unused
    builds: Mapping[str, str] = field(default_factory=dict)
    # head -> {stored name of a tied copy: canonical name it repeats}: checked equal and dropped on reading
    tied: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # write the tied copies too (PaddleNLP's classes list them in their state dict; transformers' drop them)
    writes_tied: bool = False


def format_rules(family: str, fmt: str, config=None) -> FormatRules:
    """The rules of `family` in format `fmt` ("hf", "tf", "paddle", "tf1bert"). A family whose rules depend on
    its config (the DeFormer's are its base family's) defines `rules_for_config(config, fmt)`: with `config`
    given, those; without, its `FORMATS` (what reading a checkpoint uses before its config is known)."""
    try:
        module = importlib.import_module(f"{__name__}.{family}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{family}":
            raise
        raise BadInput(f"family {family!r} has no checkpoint rules (backends/checkpoints/rules/{family}.py)") from None
    if fmt not in module.FORMATS:
        raise BadInput(f"family {family!r} cannot be stored in format {fmt!r}; "
                       f"formats: {', '.join(sorted(module.FORMATS))}")
    if config is not None and hasattr(module, "rules_for_config"):
        return module.rules_for_config(config, fmt)
    return module.FORMATS[fmt]


def head_classes(family: str, ecosystem: str) -> dict:
    """head -> the class `ecosystem` ("transformers" or "paddlenlp") calls it, from the family's head
    registry (backends/<family>/heads.py); heads without one are left out. A family transformers lacks
    (TinyBERT) is written in transformers' layout under our port class names."""
    registry = backends.family(family).head_registry
    if ecosystem == "transformers" and not any(head.transformers for head in registry.values()):
        return {name: head.port_class for name, head in registry.items()}
    return {name: getattr(head, ecosystem) for name, head in registry.items() if getattr(head, ecosystem)}


def family_of_class(fmt: str, class_name: str, families) -> str | None:
    """The family whose `fmt` rules name `class_name` (for configs without model_type)."""
    for name in families:
        try:
            if class_name in format_rules(name, fmt).classes.values():
                return name
        except BadInput:
            continue
    return None


def dense(module: str, target: str, suffix: str = "") -> list[Rule]:
    """A Linear (`module` regex, torch [out, in]) stored as a TF Dense: `<target>/kernel` [in, out], `<target>/bias`."""
    return [Rule(module + r"\.weight", f"{target}/kernel{suffix}", "transpose"),
            Rule(module + r"\.bias", f"{target}/bias{suffix}")]


def norm(module: str, target: str, suffix: str = "") -> list[Rule]:
    """A LayerNorm stored as TF's `<target>/gamma`, `<target>/beta`."""
    return [Rule(module + r"\.weight", f"{target}/gamma{suffix}"), Rule(module + r"\.bias", f"{target}/beta{suffix}")]
