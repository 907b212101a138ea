"""Checkpoint conversion: open a checkpoint through its format's rules, account for every key, and
stream each tensor from the source format's layout to the target's into a directory that appears
under its final name only when complete.
"""
from __future__ import annotations

import multiprocessing
import os
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
    """A checkpoint in some format, seen through canonical names and layouts."""

    fmt: str
    source: formats.Source
    family: str
    config: object
    head: str
    rules: FormatRules
    stored: dict  # canonical name -> stored name
    skipped: list = field(default_factory=list)  # stored names that are not parameters (allowed by name)

    def ref(self, canonical: str) -> formats.TensorRef:
        return self.source.tensors[self.stored[canonical]]

    def load(self, canonical: str) -> np.ndarray:
        """One parameter in the canonical layout."""
        return self.rules.rules.to_canonical(canonical, self.ref(canonical).load())

    def params(self) -> Mapping:
        """canonical name -> array, read when asked for (what `backends.build.build_model` takes)."""
        return _LazyParams(self)

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
                    allow_unknown=()) -> Checkpoint:
    """Open the checkpoint directory `path` stored in format `fmt`, match its keys to a head of its
    family (every parameter present, anything else a known non-parameter or allowed by name) and check
    every shape against the config."""
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
        head, stored, skipped = _match(spec, config, rules, source, head, allow_unknown)
        shapes = spec.param_shapes(config, head)
        check_shapes(shapes, stored, str(source.weights_file),
                     shape_of=lambda name: _canonical_shape(rules, name, source.tensors[stored[name]].shape))
    except BaseException:
        source.close()
        raise
    return Checkpoint(fmt, source, family, config, head, rules, stored, skipped)


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


def _match(spec, config, rules: FormatRules, source: formats.Source, head, allow_unknown):
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
    check_keys(expected, found, f"{source.weights_file} (as {spec.name} {head})", allow_unexpected=allowed)
    return head, {canonical: name for name, canonical in expected.items()}, sorted(found - set(expected))


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
    strict: bool = False  # NaN/Inf fail instead of warning
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
        tokenizer = _tokenizer_files(src, required=options.tokenizer or src_fmt == "tf1bert")
        target = format_rules(checkpoint.family, dst_fmt)
        if checkpoint.head not in target.classes:
            raise BadInput(f"format {dst_fmt} has no class for {checkpoint.family} head {checkpoint.head}")
        plan, specs = _plan(checkpoint, target, options.dtype)
        config = {**checkpoint.config.to_dict(), **backends.family_marker(checkpoint.family), **target.config,
                  "architectures": [target.classes[checkpoint.head]]}
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
        "dtype": options.dtype or "as stored", "skipped": checkpoint.skipped, "warnings": warnings,
        "tokenizer_files": [file.name for file in tokenizer], "verify": report,
        "seconds": round(time.perf_counter() - started, 3),
    }


def _plan(checkpoint: Checkpoint, target: FormatRules, dtype: str | None):
    """target name -> (canonical, source action, target action, output dtype), and the writer's specs."""
    plan, specs = {}, []
    shapes = backends.family(checkpoint.family).param_shapes(checkpoint.config, checkpoint.head)
    for canonical, shape in shapes.items():
        name, action = target.rules.rule_for(canonical)
        stored = checkpoint.ref(canonical).dtype
        out = formats.bfloat16() if dtype == "bfloat16" else np.dtype(dtype) if dtype else stored
        out = out if _floating(stored) else stored
        plan[name] = (canonical, checkpoint.rules.rules.rule_for(canonical)[1], action, out)
        specs.append((name, out, _target_shape(target, canonical, shape)))
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
