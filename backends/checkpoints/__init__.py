"""Checkpoints below converters, parity and tasks: open a checkpoint directory in any supported format
and see its tensors through canonical names and layouts.

`formats/` reads and writes each format (transformers PyTorch and TF, PaddleNLP, Google's TF1 BERT);
`rules/` says, per family, how each format names and lays out the canonical parameters.
`open_checkpoint` matches a checkpoint's keys to a head of its family, accounts for every key and checks
every shape against the config; the converters stream from it, parity reads weights from it and tasks
start training from it.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import backends
from backends.errors import BadInput, ConfigError, WeightsError
from backends.weights import check_finite, check_keys, check_shapes

from . import formats
from .rules import FormatRules, family_of_class, format_rules

# weights file -> format, to recognise a checkpoint directory (first match wins)
DIRECTORY_FORMATS = (("model.safetensors", "hf"), ("model.safetensors.index.json", "hf"), ("pytorch_model.bin", "hf"),
                     ("pytorch_model.bin.index.json", "hf"), ("model_state.pdparams", "paddle"), ("tf_model.h5", "tf"))


def detect_format(path) -> str:
    """The format of checkpoint directory `path`, from the weights file it holds."""
    path = Path(path)
    if not path.is_dir():
        raise BadInput(f"{path}: no such directory")
    for file, fmt in DIRECTORY_FORMATS:
        if (path / file).is_file():
            return fmt
    raise BadInput(f"{path}: no checkpoint found (looked for {', '.join(file for file, _ in DIRECTORY_FORMATS)})")


@dataclass
class Checkpoint:
    """A checkpoint in some format, seen through canonical names and layouts."""

    fmt: str
    source: formats.Source
    family: str
    config: object
    head: str
    rules: FormatRules
    stored: dict  # canonical name -> stored name
    skipped: list = field(default_factory=list)  # stored names that are not parameters (allowed by name)
    missing: list = field(default_factory=list)  # canonical names of the head not stored (partial opening only)

    def ref(self, canonical: str) -> formats.TensorRef:
        return self.source.tensors[self.stored[canonical]]

    def load(self, canonical: str) -> np.ndarray:
        """One parameter in the canonical layout."""
        return self.rules.rules.to_canonical(canonical, self.ref(canonical).load())

    def params(self) -> Mapping:
        """canonical name -> array, read when asked for (what `backends.build.build_model` takes)."""
        return _LazyParams(self)

    def params_for(self, head: str, shapes: Mapping) -> tuple[dict, list, list]:
        """(params, missing, unused): the stored parameters another head of the family (canonical names and
        shapes in `shapes`) takes, the names it lacks, and the stored canonical names it does not use.
        A taken parameter holding NaN or Inf is an error.

        A task head holds the body under one attribute (`bert.`, `funnel.` ...) that a bare body's names
        lack, so a name is looked up as it is, then without that first component.
        """
        params, missing, used = {}, [], set()
        for name, shape in shapes.items():
            found = next((key for key in (name, name.partition(".")[2]) if key in self.stored), None)
            if found is None:
                missing.append(name)
                continue
            stored_shape = _canonical_shape(self.rules, found, self.ref(found).shape)
            if stored_shape != tuple(shape):
                raise WeightsError(f"{self.source.weights_file}: {self.stored[found]} has shape {list(stored_shape)}, "
                                   f"the {self.family} {head} head needs {list(shape)}")
            params[name] = self.load(found)
            # training from NaN/Inf weights runs on to an all-NaN model
            check_finite(self.stored[found], params[name], str(self.source.weights_file))
            used.add(found)
        return params, missing, [key for key in self.stored if key not in used]

    def close(self) -> None:
        self.source.close()


class _LazyParams(Mapping):
    def __init__(self, checkpoint: Checkpoint):
        self.checkpoint = checkpoint

    def __getitem__(self, name):
        return self.checkpoint.load(name)

    def __iter__(self):
        return iter(self.checkpoint.stored)

    def __len__(self):
        return len(self.checkpoint.stored)


def open_checkpoint(fmt: str, path, family: str | None = None, head: str | None = None,
                    allow_unknown=(), partial: bool = False) -> Checkpoint:
    """Open the checkpoint directory `path` stored in format `fmt`, match its keys to a head of its
    family (every parameter present, anything else a known non-parameter or allowed by name) and check
    every shape against the config.

    `partial` (starting training from a checkpoint): parameters of the head may be missing (listed in
    `Checkpoint.missing`) and unknown entries are skipped, not errors."""
    source = formats.get(fmt).read(Path(path))
    try:
        family = _family(fmt, source, family)
        spec = backends.family(family)
        rules = format_rules(family, fmt)
        for key, value in rules.config.items():
            if source.config.get(key, value) != value:
                raise ConfigError(f"{source.config_file}: {key}={source.config[key]!r} is not supported "
                                  f"(only {value!r})")
        config_dict = {k: v for k, v in source.config.items() if k not in rules.config and k != "architectures"}
        config = spec.config_class.from_dict(config_dict, source=str(source.config_file))
        head, stored, skipped = _match(spec, config, rules, source, head, (".*",) if partial else allow_unknown,
                                       partial)
        shapes = {name: shape for name, shape in spec.param_shapes(config, head).items() if name in stored}
        check_shapes(shapes, stored, str(source.weights_file),
                     shape_of=lambda name: _canonical_shape(rules, name, source.tensors[stored[name]].shape))
    except BaseException:
        source.close()
        raise
    missing = [name for name in spec.param_shapes(config, head) if name not in stored]
    return Checkpoint(fmt, source, family, config, head, rules, stored, skipped, missing)


def _family(fmt: str, source: formats.Source, family: str | None) -> str:
    """--family, else the config's model_type, else the family whose classes name its architecture."""
    if family:
        if family not in backends.FAMILIES:
            raise BadInput(f"unknown family {family!r}; known: {', '.join(backends.FAMILIES)}")
        return family
    model_type = source.config.get("model_type")
    by_type = {backends.family(name).config_class.model_type: name for name in backends.FAMILIES}
    if model_type:
        if model_type not in by_type:
            raise BadInput(f"{source.config_file}: model_type {model_type!r} is not a family we convert; "
                           f"known: {', '.join(sorted(by_type))}")
        return by_type[model_type]
    for architecture in source.config.get("architectures") or []:
        found = family_of_class(fmt, architecture, backends.FAMILIES)
        if found:
            return found
    raise BadInput(f"{source.config_file}: no model_type or known architecture; pass --family")


def _match(spec, config, rules: FormatRules, source: formats.Source, head, allow_unknown, partial: bool = False):
    """(head, canonical -> stored name, skipped stored names) for the head the checkpoint holds: fewest
    missing parameters, then shape mismatches, then unknown entries; the config's architecture breaks ties."""
    if head is not None and head not in rules.classes:
        raise BadInput(f"family {spec.name} has no head {head!r} in this format; heads: {', '.join(rules.classes)}")
    found = set(source.tensors)
    named = {h for h, cls in rules.classes.items() if cls in (source.config.get("architectures") or [])}
    candidates = []
    for name in [head or rules.default_head] if head or rules.default_head else list(rules.classes):
        shapes = spec.param_shapes(config, name)
        expected = rules.rules.target_names(shapes)  # stored -> canonical
        mismatched = sum(_canonical_shape(rules, c, source.tensors[s].shape) != tuple(shapes[c])
                         for s, c in expected.items() if s in found)
        score = (len(set(expected) - found), mismatched, len(found - set(expected)), name not in named)
        candidates.append((score, name, expected))
    _, head, expected = min(candidates, key=lambda c: c[0])
    allowed = [*rules.ignore, *allow_unknown]
    check_keys(expected, found, f"{source.weights_file} (as {spec.name} {head})", allow_unexpected=allowed,
               allow_missing=(".*",) if partial else ())
    return head, {canonical: name for name, canonical in expected.items() if name in found}, sorted(found - set(expected))


def _canonical_shape(rules: FormatRules, canonical: str, stored_shape: tuple) -> tuple:
    """The canonical shape of a stored shape, computed on a zero-byte array."""
    return rules.rules.to_canonical(canonical, np.empty(stored_shape, dtype="V0")).shape
