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
import re
from pathlib import Path

import numpy as np

import backends
from backends.errors import BadInput, ConfigError, WeightsError
from backends.weights import check_finite, check_keys, check_shapes

from . import formats
from .rules import FormatRules, family_of_class, format_rules

# weights file -> format, to recognise a checkpoint directory (first match wins)
# (a sharded checkpoint holds the index `<weights file>.index.json` instead of the weights file)
DIRECTORY_FORMATS = (("model.safetensors", "hf"), ("model.safetensors.index.json", "hf"), ("pytorch_model.bin", "hf"),
                     ("pytorch_model.bin.index.json", "hf"), ("model_state.pdparams", "paddle"),
                     ("model_state.pdparams.index.json", "paddle"), ("tf_model.h5", "tf"), ("tf_model.h5.index.json", "tf"))


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
    """A checkpoint in some format, seen through canonical names and layouts.

    `head` is the head whose parameters it holds; `stored` maps every canonical parameter it holds (the
    head's own and optional parts such as a pooler the head does not use) to its stored name; `absent`
    lists the head's parameters it lacks (optional parts: `params()` gives them the family's init);
    `left_out` the stored parameters of other heads that --head dropped; `skipped` stored entries that
    are not parameters (buffers, optimizer slots, tied copies)."""

    fmt: str
    source: formats.Source
    family: str
    config: object
    head: str
    rules: FormatRules
    stored: dict  # canonical name -> stored name
    skipped: list = field(default_factory=list)  # stored names that are not parameters (allowed by name)
    absent: list = field(default_factory=list)  # head parameters not held (optional parts; any when partial)
    left_out: list = field(default_factory=list)  # stored names of parameters of other heads (--head)

    def ref(self, canonical: str) -> formats.TensorRef:
        return self.source.tensors[self.stored[canonical]]

    def load(self, canonical: str) -> np.ndarray:
        """One parameter in the canonical layout."""
        return self.rules.rules.to_canonical(canonical, self.ref(canonical).load())

    def params(self, seed: int = 0) -> Mapping:
        """canonical name -> array for every parameter of our port of `head`, read when asked for (what
        `backends.build.build_model` takes): optional parts the checkpoint lacks get the family's seeded init,
        optional parts the port does not use are left out."""
        return _LazyParams(self, seed)

    def holds(self, head: str) -> dict:
        """canonical name of `head` -> the canonical name this checkpoint holds it under, for every parameter of
        `head` it holds: a base model's parameters match with or without the family's prefix (`bert.`), so a
        pre-training checkpoint's body serves a classification head (whose own parameters are then absent)."""
        spec = backends.family(self.family)
        return self._held({**spec.param_shapes(self.config, head), **spec.optional_shapes(self.config, head)})

    def _held(self, names) -> dict:
        # task heads hold the body under the family's name (a DeFormer's: its base family's), a bare body does not
        prefix = getattr(self.config, "base_model_prefix", self.family) + "."
        held = {name.removeprefix(prefix): name for name in self.stored}
        return {name: held[name.removeprefix(prefix)] for name in names if name.removeprefix(prefix) in held}

    def params_for(self, head: str, shapes: Mapping) -> tuple[dict, list, list]:
        """(params, missing, unused): the stored parameters another head of the family (canonical names and
        shapes in `shapes`, e.g. a task head with its own label count) takes (see `holds`), the names it
        lacks, and the stored canonical names it does not use. A taken parameter holding NaN or Inf is an
        error: training from it runs on to an all-NaN model."""
        held, params = self._held(shapes), {}
        for name, shape in shapes.items():
            if name not in held:
                continue
            stored_shape = _canonical_shape(self.rules, held[name], self.ref(held[name]).shape)
            if stored_shape != tuple(shape):
                raise WeightsError(f"{self.source.weights_file}: {self.stored[held[name]]} has shape "
                                   f"{list(stored_shape)}, the {self.family} {head} head needs {list(shape)}")
            params[name] = self.load(held[name])
            check_finite(self.stored[held[name]], params[name], str(self.source.weights_file))
        used = set(held.values())
        return params, [name for name in shapes if name not in held], [key for key in self.stored if key not in used]

    def close(self) -> None:
        self.source.close()


class _LazyParams(Mapping):
    def __init__(self, checkpoint: Checkpoint, seed: int):
        self.checkpoint, self.seed, self.init = checkpoint, seed, None
        spec = backends.family(checkpoint.family)
        self.names = list(spec.param_shapes(checkpoint.config, checkpoint.head))

    def __getitem__(self, name):
        if name in self.checkpoint.stored:
            return self.checkpoint.load(name)
        if name not in self.names:
            raise KeyError(name)
        if self.init is None:
            spec, c = backends.family(self.checkpoint.family), self.checkpoint
            self.init = spec.init_params(c.config, c.head, np.random.default_rng(self.seed))
        return self.init[name]

    def __iter__(self):
        return iter(self.names)

    def __len__(self):
        return len(self.names)


def open_checkpoint(fmt: str, path, family: str | None = None, head: str | None = None,
                    allow_unknown=(), partial: bool = False) -> Checkpoint:
    """Open the checkpoint directory `path` stored in format `fmt`, match its keys to a head of its
    family (every required parameter present, anything else an optional part, a known non-parameter, a
    tied copy or allowed by name; with `head`, parameters of other heads are left out) and check every
    shape against the config.

    `partial` (starting training from a checkpoint): any parameter of the head may be absent (listed in
    `Checkpoint.absent`) and unknown entries are skipped, not errors."""
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
        rules = format_rules(family, fmt, config)  # a family's rules may depend on its config (the DeFormer's base)
        checkpoint = _match(fmt, spec, config, rules, source, head, (".*",) if partial else allow_unknown, partial)
        shapes = {**spec.param_shapes(config, checkpoint.head), **spec.optional_shapes(config, checkpoint.head)}
        check_shapes({name: shapes[name] for name in checkpoint.stored}, checkpoint.stored,
                     str(source.weights_file), shape_of=lambda name: _canonical_shape(
                         rules, name, source.tensors[checkpoint.stored[name]].shape))
        _check_tied_copies(checkpoint)
    except BaseException:
        source.close()
        raise
    return checkpoint


def _family(fmt: str, source: formats.Source, family: str | None) -> str:
    """--family, else the config's family key or model_type (backends.family_of_config), else the family
    whose classes name its architecture."""
    found = backends.family_of_config(source.config, str(source.config_file), family)
    if found:
        return found
    for architecture in source.config.get("architectures") or []:
        found = family_of_class(fmt, architecture, backends.FAMILIES)
        if found:
            return found
    raise BadInput(f"{source.config_file}: no model_type or known architecture; pass --family")


def _match(fmt, spec, config, rules: FormatRules, source: formats.Source, head, allow_unknown,
           partial: bool = False) -> Checkpoint:
    """The checkpoint as the head it holds: fewest missing required parameters, then shape mismatches, then
    unknown entries; the config's architecture breaks ties. With `head` given, stored parameters of the
    family's other heads are left out instead of failing."""
    if head is not None and head not in rules.classes:
        raise BadInput(f"family {spec.name} has no head {head!r} in this format; heads: {', '.join(rules.classes)}")
    found = set(source.tensors)
    named = {h for h, cls in rules.classes.items() if cls in (source.config.get("architectures") or [])}
    candidates, unplaceable = [], []
    for name in [head or rules.default_head] if head or rules.default_head else list(rules.classes):
        optional = spec.optional_shapes(config, name)
        shapes = {**spec.param_shapes(config, name), **optional}  # the port's parameters first
        try:
            expected = _stored_names(rules, shapes, optional)  # stored -> canonical
        except WeightsError as exc:  # the format cannot hold this head as configured (an untied decoder in TF)
            unplaceable.append(exc)
            continue
        required = {stored for stored, canonical in expected.items() if canonical not in optional}
        mismatched = sum(_canonical_shape(rules, c, source.tensors[s].shape) != tuple(shapes[c])
                         for s, c in expected.items() if s in found)
        score = (len(required - found), mismatched, len(found - set(expected)), name not in named)
        candidates.append((score, name, expected, required))
    if not candidates:
        raise unplaceable[0]
    _, head_found, expected, required = min(candidates, key=lambda c: c[0])
    copies = {copy for tied in rules.tied.values() for copy in tied}
    allowed = [*rules.ignore, *map(re.escape, copies), *allow_unknown]
    others = set()
    if head is not None:  # the user picked one head: other heads' parameters are left out, not errors
        for other in rules.classes:
            other_shapes = {**spec.param_shapes(config, other), **spec.optional_shapes(config, other)}
            others |= set(_stored_names(rules, other_shapes, other_shapes))
    left_out = sorted((found - set(expected)) & others)
    check_keys(required, found - set(left_out), f"{source.weights_file} (as {spec.name} {head_found})",
               allow_unexpected=[*allowed, *map(re.escape, set(expected) - required)],
               allow_missing=(".*",) if partial else ())
    stored = {canonical: name for name, canonical in expected.items() if name in found}
    absent = [canonical for canonical in spec.param_shapes(config, head_found) if canonical not in stored]
    skipped = sorted(found - set(expected) - set(left_out) - copies)  # tied copies: checked equal, not reported
    return Checkpoint(fmt, source, spec.name, config, head_found, rules, stored, skipped, absent, left_out)


def _stored_names(rules: FormatRules, shapes: Mapping, optional: Mapping) -> dict:
    """stored name -> canonical name of `shapes`; optional parameters the format has no name for are left out."""
    names = {}
    for canonical in shapes:
        try:
            rules.rules.rule_for(canonical)
        except WeightsError:
            if canonical in optional:
                continue
            raise
        names[canonical] = canonical
    return rules.rules.target_names(names)


def _check_tied_copies(checkpoint: Checkpoint) -> None:
    """A stored tied copy (PaddleNLP's `cls.predictions.decoder.weight`, an old transformers file's decoder) must
    hold the values of the parameter it repeats: otherwise the checkpoint is untied and its config says tied."""
    held = set(checkpoint.stored.values())
    for copy, canonical in checkpoint.rules.tied.get(checkpoint.head, {}).items():
        if copy in checkpoint.source.tensors and canonical in checkpoint.stored and copy not in held:
            if not np.array_equal(checkpoint.source.tensors[copy].load(), checkpoint.ref(canonical).load()):
                raise WeightsError(f"{checkpoint.source.weights_file}: {copy} is a tied copy of {canonical} but holds "
                                   "other values (an untied decoder needs tie_word_embeddings: false in the config)")


def _canonical_shape(rules: FormatRules, canonical: str, stored_shape: tuple) -> tuple:
    """The canonical shape of a stored shape, computed on a zero-byte array."""
    return rules.rules.to_canonical(canonical, np.empty(stored_shape, dtype="V0")).shape
