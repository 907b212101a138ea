"""Checkpoint conversion: open a checkpoint through its format's rules, account for every key, and
stream each tensor from the source format's layout to the target's into a directory that appears
under its final name only when complete.
"""
from __future__ import annotations

import multiprocessing
import os
import re
import shutil
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import backends
from backends.errors import BadInput, ConfigError, WeightsError
from backends.weights import ACTIONS, check_keys, check_shapes

from . import formats
from .rules import FormatRules, family_of_class, format_rules

# command -> (source format, target format)
COMMANDS = {
    "hf2paddle": ("hf", "paddle"), "paddle2hf": ("paddle", "hf"), "hf2tf": ("hf", "tf"), "tf2hf": ("tf", "hf"),
    "paddle2tf": ("paddle", "tf"), "tf2paddle": ("tf", "paddle"), "tf1bert2hf": ("tf1bert", "hf"),
}
DTYPES = ("float32", "float16", "bfloat16")
TOKENIZER_FILES = ("vocab.txt", "vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json", "added_tokens.json")
VOCAB_FILES = ("vocab.txt", "vocab.json", "tokenizer.json")
# --verify: largest output difference allowed, relative to max(1, largest output), by stored dtype
VERIFY_TOLERANCE = {"float32": 1e-4, "float16": 2e-2, "bfloat16": 1e-1}


class VerifyFailed(Exception):
    """The converted checkpoint does not compute what the source computes (exit code 1)."""


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
    absent: list = field(default_factory=list)  # canonical names of the head's optional parameters not held
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
        prefix = self.family + "."
        held = {name.removeprefix(prefix): name for name in self.stored}
        wanted = {**spec.param_shapes(self.config, head), **spec.optional_shapes(self.config, head)}
        return {name: held[name.removeprefix(prefix)] for name in wanted if name.removeprefix(prefix) in held}

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
                    allow_unknown=()) -> Checkpoint:
    """Open the checkpoint directory `path` stored in format `fmt`, match its keys to a head of its
    family (every required parameter present, anything else an optional part, a known non-parameter, a
    tied copy or allowed by name; with `head`, parameters of other heads are left out) and check every
    shape against the config."""
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
        checkpoint = _match(fmt, spec, config, rules, source, head, allow_unknown)
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


def _match(fmt, spec, config, rules: FormatRules, source: formats.Source, head, allow_unknown) -> Checkpoint:
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
               allow_unexpected=[*allowed, *map(re.escape, set(expected) - required)])
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


def _target_shape(rules: FormatRules, canonical: str, shape: tuple) -> tuple:
    return rules.rules.to_target(canonical, np.empty(shape, dtype="V0"))[1].shape


@dataclass
class Options:
    family: str | None = None
    head: str | None = None
    dtype: str | None = None  # cast floating tensors; None keeps the stored dtypes
    force: bool = False
    strict: bool = False  # NaN/Inf and optional-part notes fail instead of warning
    verify: bool = False
    allow_unknown: tuple = ()
    tokenizer: bool = True  # carry the tokenizer files (and require a vocabulary)


def convert(command: str, src, dst, options: Options | None = None, warn=None) -> dict:
    """Run `command` from directory `src` to directory `dst`; returns the summary."""
    options = options or Options()
    warn = warn or (lambda message: print(f"warning: {message}", file=sys.stderr))
    if command not in COMMANDS:
        raise BadInput(f"unknown command {command!r}; known: {', '.join(COMMANDS)}")
    src_fmt, dst_fmt = COMMANDS[command]
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise BadInput(f"{src}: no such directory")
    if dst.exists() and not options.force:
        raise BadInput(f"{dst}: already exists; pass --force to replace it")
    if options.dtype is not None and options.dtype not in DTYPES:
        raise BadInput(f"--dtype {options.dtype}: choose one of {', '.join(DTYPES)}")
    started = time.perf_counter()
    checkpoint = open_checkpoint(src_fmt, src, options.family, options.head, options.allow_unknown)
    try:
        if checkpoint.skipped:
            warn(f"{checkpoint.source.weights_file}: not converted ({len(checkpoint.skipped)} stored entries that "
                 f"are not parameters): {', '.join(checkpoint.skipped)}")
        if checkpoint.left_out:
            warn(f"{checkpoint.source.weights_file}: --head {checkpoint.head} leaves out {len(checkpoint.left_out)} "
                 f"parameters of other heads: {_short(checkpoint.left_out)}")
        tokenizer = _tokenizer_files(src, required=options.tokenizer or src_fmt == "tf1bert")
        target = format_rules(checkpoint.family, dst_fmt)
        if checkpoint.head not in target.classes:
            raise BadInput(f"format {dst_fmt} has no class for {checkpoint.family} head {checkpoint.head}")
        notes = optional_part_notes(checkpoint, target, dst_fmt)
        if notes and options.strict:
            raise WeightsError(f"{notes[0]} (--strict)")
        for note in notes:
            warn(note)
        plan, specs = _plan(checkpoint, target, dst_fmt, options.dtype)
        config = {**checkpoint.config.to_dict(), **target.config, "architectures": [target.classes[checkpoint.head]]}
        if options.dtype and dst_fmt in ("hf", "tf"):
            config["torch_dtype"] = options.dtype
        warnings: list[str] = []
        produce = Prefetcher([name for name, _, _ in specs], _producer(checkpoint, plan, options.strict, warnings, warn))
        with atomic_dir(dst, options.force) as tmp, produce:
            formats.get(dst_fmt).write(tmp, config, specs, produce, target)
            for file in tokenizer:
                shutil.copyfile(file, tmp / file.name)
            report = verify(checkpoint, dst_fmt, tmp, options.dtype, options.allow_unknown) if options.verify else None
    finally:
        checkpoint.close()
    return {
        "command": command, "source": str(src), "destination": str(dst), "family": checkpoint.family,
        "head": checkpoint.head, "tensors": len(specs),
        "bytes": int(sum(np.prod(shape, dtype=np.int64) * dtype.itemsize for _, dtype, shape in specs)),
        "dtype": options.dtype or "as stored", "skipped": checkpoint.skipped, "left_out": checkpoint.left_out,
        "notes": notes, "warnings": warnings, "tokenizer_files": [file.name for file in tokenizer], "verify": report,
        "seconds": round(time.perf_counter() - started, 3),
    }


def optional_part_notes(checkpoint: Checkpoint, target: FormatRules, fmt: str) -> list[str]:
    """One line per optional part the target's class treats differently from the checkpoint: parts it builds
    and the checkpoint lacks (the class initialises them, as transformers' from_pretrained reports newly
    initialised weights), and parts the checkpoint holds and the class does not build (carried along for round
    trips; the class reports them unused)."""
    spec = backends.family(checkpoint.family)
    optional = spec.optional_shapes(checkpoint.config, checkpoint.head)
    built = [name for name in optional if re.fullmatch(target.builds.get(checkpoint.head, "(?!)"), name)]
    cls = f"{formats.get(fmt).TITLE} {target.classes[checkpoint.head]}"
    lacking = [name for name in built if name not in checkpoint.stored]
    unused = [name for name in optional if name in checkpoint.stored and name not in built]
    notes = []
    if lacking:
        notes.append(f"{checkpoint.source.weights_file} lacks {_short(lacking)}: {cls} will initialise them")
    if unused:
        notes.append(f"{checkpoint.source.weights_file} holds {_short(unused)}, which {cls} does not use: "
                     "written all the same (it reports them unused)")
    return notes


def _short(names: list, limit: int = 4) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _plan(checkpoint: Checkpoint, target: FormatRules, fmt: str, dtype: str | None):
    """target name -> (canonical, source action, target action, output dtype), and the writer's specs: every
    parameter the checkpoint holds, then the tied copies the target format stores too."""
    plan, specs = {}, []
    spec = backends.family(checkpoint.family)
    shapes = {**spec.param_shapes(checkpoint.config, checkpoint.head),
              **spec.optional_shapes(checkpoint.config, checkpoint.head)}
    for canonical in checkpoint.stored:
        try:
            name, action = target.rules.rule_for(canonical)
        except WeightsError:
            raise BadInput(f"{checkpoint.source.weights_file}: {canonical} has no place in {formats.get(fmt).TITLE}'s "
                           f"{target.classes[checkpoint.head]}") from None
        stored = checkpoint.ref(canonical).dtype
        out = formats.bfloat16() if dtype == "bfloat16" else np.dtype(dtype) if dtype else stored
        out = out if _floating(stored) else stored
        plan[name] = (canonical, checkpoint.rules.rules.rule_for(canonical)[1], action, out)
        specs.append((name, out, _target_shape(target, canonical, shapes[canonical])))
    for copy, canonical in target.tied.get(checkpoint.head, {}).items() if target.writes_tied else ():
        if canonical in checkpoint.stored and copy not in plan:
            plan[copy] = plan[target.rules.rule_for(canonical)[0]]
            specs.append((copy, plan[copy][3], _target_shape(target, canonical, shapes[canonical])))
    return plan, specs


def _producer(checkpoint: Checkpoint, plan: dict, strict: bool, warnings: list, warn):
    """produce(target name) -> the array in the target layout and dtype; NaN/Inf warn or, strict, fail."""
    weights = checkpoint.source.weights_file

    def produce(name: str) -> np.ndarray:
        canonical, src_action, dst_action, dtype = plan[name]
        array = checkpoint.ref(canonical).load()
        if src_action != dst_action:  # one action on both sides means both store the same layout
            array = _apply(ACTIONS[dst_action][0], _apply(ACTIONS[src_action][1], array))
        problem = None if _finite(array) else "holds NaN or Inf values"
        if array.dtype != dtype:
            with np.errstate(over="ignore"):  # reported below
                array = array.astype(dtype)
            problem = problem or (None if _finite(array) else f"overflows {dtype.name}")
        if problem:
            message = f"{weights}: {checkpoint.stored[canonical]} {problem}"
            if strict:
                raise WeightsError(message)
            warnings.append(message)
            warn(message + " (--strict makes this an error)")
        return array

    return produce


class Prefetcher:
    """produce(name) for writers that ask in `order`: while the writer writes one tensor, a thread reads
    and transforms the next (file I/O and numpy copies release the GIL). One tensor more in memory."""

    def __init__(self, order: list, make):
        self.make, self.pool, self.pending = make, ThreadPoolExecutor(1), {}
        self.following = dict(zip(order, order[1:]))

    def __call__(self, name: str) -> np.ndarray:
        future = self.pending.pop(name, None) or self.pool.submit(self.make, name)
        following = self.following.get(name)
        if following is not None and following not in self.pending:
            self.pending[following] = self.pool.submit(self.make, following)
        return future.result()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.pool.shutdown(wait=True, cancel_futures=True)


def _apply(action, array: np.ndarray) -> np.ndarray:
    """An action of the rules, with a cache-friendly tiled 2-D transpose in place of numpy's
    (5 times faster on large kernels, the same result)."""
    if action is ACTIONS["transpose"][0] and array.ndim == 2:
        return transpose(array)
    return action(array)


def transpose(array: np.ndarray, rows: int = 16, cols: int = 512) -> np.ndarray:
    """array.T as a new C-contiguous array, copied in tiles of `rows` x `cols` source elements: each
    tile reads a few long rows and writes, per output row, one 64-byte cache line (float32)."""
    out = np.empty(array.shape[::-1], array.dtype)
    for i in range(0, array.shape[0], rows):
        for j in range(0, array.shape[1], cols):
            out[j:j + cols, i:i + rows] = array[i:i + rows, j:j + cols].T
    return out


def _floating(dtype: np.dtype) -> bool:
    return np.issubdtype(dtype, np.floating) or formats.is_bfloat16(dtype)


def _finite(array: np.ndarray) -> bool:
    """No NaN or Inf; a finite sum proves it in one pass, an overflowing one is checked element-wise."""
    if not _floating(array.dtype) or array.size == 0:
        return True
    if np.isfinite(array.sum(dtype=np.float64 if array.itemsize < 4 else None)):
        return True
    return bool(np.isfinite(array.astype(np.float32) if array.itemsize < 4 else array).all())


def _tokenizer_files(src: Path, required: bool) -> list[Path]:
    """The tokenizer files to carry along; without them a vocabulary is an error unless not required."""
    if not required:
        return []
    files = [src / name for name in TOKENIZER_FILES if (src / name).is_file()]
    if not any(file.name in VOCAB_FILES for file in files):
        raise BadInput(f"{src}: no vocabulary ({', '.join(VOCAB_FILES)}); pass --no-tokenizer to convert "
                       "weights and config alone")
    return files


@contextmanager
def atomic_dir(path: Path, replace: bool):
    """Yield a temporary sibling directory of `path`; it becomes `path` only if the block succeeds
    (an existing `path` is replaced only when `replace`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:  # from the mkdir on: a Ctrl-C right after it must still remove it
        tmp.mkdir()
        yield tmp
        if path.exists() or path.is_symlink():
            if not replace:
                raise BadInput(f"{path}: already exists; pass --force to replace it")
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def verify(checkpoint: Checkpoint, fmt: str, path: Path, dtype: str | None, allow_unknown=()) -> dict:
    """Run the source weights through our PyTorch port and the converted ones, read back from `path`,
    through the port of the target format's framework, each in a fresh process (frameworks loaded into
    one process can crash each other); compare every output (float32)."""
    framework = formats.get(fmt).FRAMEWORK
    spec = backends.family(checkpoint.family)
    inputs = spec.make_inputs(checkpoint.config, checkpoint.head, 2, 16, np.random.default_rng(0))
    runs = []
    for run_fmt, run_path, fw, allowed in ((checkpoint.fmt, checkpoint.source.path, "torch", allow_unknown),
                                           (fmt, path, framework, ())):
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            job = pool.submit(port_outputs, run_fmt, str(run_path), checkpoint.family, checkpoint.head, fw, inputs,
                              allowed)
            try:
                runs.append(job.result())
            except BrokenProcessPool:
                raise VerifyFailed(f"our {fw} port crashed running {run_path}") from None
    reference, candidate = runs
    scale = max(1.0, max(float(np.max(np.abs(v))) for v in reference.values() if np.size(v)))
    worst = max((float(np.max(np.abs(reference[k] - candidate[k]))) for k in reference if np.size(reference[k])),
                default=0.0)
    allowed = VERIFY_TOLERANCE[dtype or "float32"] * scale
    if worst > allowed:
        raise VerifyFailed(f"outputs differ by {worst:.3g} (allowed {allowed:.3g}) between our torch port on "
                           f"{checkpoint.source.path} and our {framework} port on the converted checkpoint")
    return {"backends": ["torch", framework], "outputs": len(reference), "max_abs_diff": worst, "tolerance": allowed}


def port_outputs(fmt: str, path: str, family: str, head: str, fw: str, inputs: dict, allow_unknown=()) -> dict:
    """Outputs (float32, forward only) of our `fw` port holding the checkpoint at `path`."""
    from parity.worker import run_backend

    checkpoint = open_checkpoint(fmt, path, family, head, allow_unknown)
    try:
        return run_backend(family, fw, checkpoint.config, head, checkpoint.params(), inputs, "float32", backward=False)
    finally:
        checkpoint.close()
