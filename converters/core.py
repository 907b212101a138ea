"""Checkpoint conversion: open a checkpoint through its format's rules (backends.checkpoints), and
stream each tensor from the source format's layout to the target's into a directory that appears
under its final name only when complete.
"""
from __future__ import annotations

import ctypes
import errno
import multiprocessing
import os
import re
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import backends
from backends.checkpoints import Checkpoint, formats, open_checkpoint
from backends.checkpoints.adapters import FILES as ADAPTER_FILES, is_adapter_folder, read_adapter_folder, \
    write_adapter_folder
from backends.checkpoints.formats import sharding
from backends.checkpoints.rules import FormatRules, format_rules
from backends.errors import BadInput, WeightsError
from backends.run import run_backend
from backends.tensorfile import numpy_dtype, partial_path
from backends.weights import ACTIONS

# command -> (source format, target format)
COMMANDS = {
    "hf2paddle": ("hf", "paddle"), "paddle2hf": ("paddle", "hf"), "hf2tf": ("hf", "tf"), "tf2hf": ("tf", "hf"),
    "paddle2tf": ("paddle", "tf"), "tf2paddle": ("tf", "paddle"), "tf1bert2hf": ("tf1bert", "hf"),
}
DTYPES = ("float32", "float16", "bfloat16")
TOKENIZER_FILES = ("vocab.txt", "vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json", "added_tokens.json")
VOCAB_FILES = ("vocab.txt", "vocab.json", "tokenizer.json")
# threads reading and transforming the next tensors while the writer writes one (sources whose loads are
# positioned reads): with two, on two cores, a transpose no longer leaves the writer waiting
PREFETCH_THREADS = 2
# --verify: largest output difference allowed, relative to max(1, largest output), by stored dtype
VERIFY_TOLERANCE = {"float32": 1e-4, "float16": 2e-2, "bfloat16": 1e-1}


class VerifyFailed(Exception):
    """The converted checkpoint does not compute what the source computes (exit code 1)."""


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
    max_shard_size: int | str | None = None  # save_pretrained's syntax; None: the target library's default


def convert(command: str, src, dst, options: Options | None = None, warn=None) -> dict:
    """Run `command` from directory `src` to directory `dst`; returns the summary."""
    options = options or Options()
    warn = warn or (lambda message: print(f"warning: {message}", file=sys.stderr))
    if command not in COMMANDS:
        raise BadInput(f"unknown command {command!r}; known: {', '.join(COMMANDS)}")
    src_fmt, dst_fmt = COMMANDS[command]
    src, dst = Path(src), Path(dst)
    check_paths(src, dst, options.force)
    if options.dtype is not None and options.dtype not in DTYPES:
        raise BadInput(f"--dtype {options.dtype}: choose one of {', '.join(DTYPES)}")
    writer = formats.get(dst_fmt)
    max_bytes = sharding.parse_size(writer.MAX_SHARD_SIZE if options.max_shard_size is None else options.max_shard_size)
    started = time.perf_counter()
    if is_adapter_folder(src):
        return convert_adapter(command, src, dst, options, started)
    checkpoint = open_checkpoint(src_fmt, src, options.family, options.head, options.allow_unknown)
    try:
        if checkpoint.skipped:
            warn(f"{checkpoint.source.weights_file}: not converted ({len(checkpoint.skipped)} stored entries that "
                 f"are not parameters): {', '.join(checkpoint.skipped)}")
        if checkpoint.left_out:
            warn(f"{checkpoint.source.weights_file}: --head {checkpoint.head} leaves out {len(checkpoint.left_out)} "
                 f"parameters of other heads: {_short(checkpoint.left_out)}")
        tokenizer = _tokenizer_files(src, required=options.tokenizer or src_fmt == "tf1bert")
        target = format_rules(checkpoint.family, dst_fmt, checkpoint.config)
        if checkpoint.head not in target.classes:
            raise BadInput(f"format {dst_fmt} has no class for {checkpoint.family} head {checkpoint.head}")
        notes = optional_part_notes(checkpoint, target, dst_fmt)
        if notes and options.strict:
            raise WeightsError(f"{notes[0]} (--strict)")
        for note in notes:
            warn(note)
        plan, specs = _plan(checkpoint, target, dst_fmt, options.dtype)
        config = {**checkpoint.config.to_dict(), **backends.family_marker(checkpoint.family), **target.config,
                  "architectures": [target.classes[checkpoint.head]]}
        if options.dtype and dst_fmt in ("hf", "tf"):
            config["torch_dtype"] = options.dtype
        warnings: list[str] = []
        threads = PREFETCH_THREADS if checkpoint.source.concurrent_loads else 1
        make, warn_or_fail = _producer(checkpoint, plan, options.strict, warnings, warn)
        prefetched = Prefetcher([name for name, _, _ in specs], make, threads)
        with atomic_dir(dst, options.force) as tmp, prefetched:
            files = writer.write(tmp, config, specs, lambda name: warn_or_fail(prefetched(name)), target, max_bytes)
            for file in tokenizer:
                shutil.copyfile(file, tmp / file.name)
            report = verify(checkpoint, dst_fmt, tmp, options.dtype, options.allow_unknown) if options.verify else None
    finally:
        checkpoint.close()
    return {
        "command": command, "source": str(src), "destination": str(dst), "family": checkpoint.family,
        "head": checkpoint.head, "tensors": len(specs), "weights_files": files,
        "bytes": int(sum(np.prod(shape, dtype=np.int64) * dtype.itemsize for _, dtype, shape in specs)),
        "dtype": options.dtype or "as stored", "skipped": checkpoint.skipped, "left_out": checkpoint.left_out,
        "notes": notes, "warnings": warnings, "tokenizer_files": [file.name for file in tokenizer], "verify": report,
        "seconds": round(time.perf_counter() - started, 3),
    }


def convert_adapter(command: str, src: Path, dst: Path, options: Options, started: float) -> dict:
    """An adapter-only folder (backends/checkpoints/adapters.py) moved to another framework's form: the same JSON
    files, the adapter and head weights named and laid out as the target's port loads them."""
    src_fmt, dst_fmt = COMMANDS[command]
    if src_fmt not in ADAPTER_FILES or dst_fmt not in ADAPTER_FILES:
        raise BadInput(f"{src}: an adapter-only folder; {command} does not move those (forms: {', '.join(ADAPTER_FILES)})")
    if options.verify:
        raise BadInput(f"{src}: --verify runs a whole model; an adapter-only folder has no base model to run")
    stored = read_adapter_folder(src)
    if stored.fmt != src_fmt:
        raise BadInput(f"{src}: an adapter folder in {stored.fmt} form, not {src_fmt}: use {stored.fmt}2{dst_fmt}")
    if options.family and options.family != stored.family:
        raise BadInput(f"{src}: an adapter for a {stored.family} model, not --family {options.family}")
    if options.head and options.head != stored.head:
        raise BadInput(f"{src}: an adapter with a {stored.head} head, not --head {options.head}")
    with atomic_dir(dst, options.force) as tmp:
        write_adapter_folder(tmp, dst_fmt, stored.family, stored.config, stored.head, stored.name, stored.params,
                             options.dtype)
    arrays = stored.params.values()
    out_size = {"bfloat16": 2, "float16": 2, "float32": 4}.get(options.dtype)
    return {
        "command": command, "source": str(src), "destination": str(dst), "family": stored.family,
        "head": stored.head, "adapter": stored.adapter, "adapter_name": stored.name, "tensors": len(stored.params),
        "weights_files": 1,  # the adapter's own file (its head's beside it): adapters are never sharded
        "bytes": int(sum(a.size * (out_size or a.itemsize) for a in arrays)), "dtype": options.dtype or "as stored",
        "skipped": [], "left_out": [], "notes": [], "warnings": [], "tokenizer_files": [],
        "verify": None, "seconds": round(time.perf_counter() - started, 3),
    }


def check_paths(src: Path, dst: Path, force: bool) -> None:
    """SRC and DST checked before any work: SRC a folder, DST neither SRC nor inside it nor holding it
    (symlinks resolved: --force would delete the source), absent unless --force, and creatable."""
    if not src.is_dir():
        raise BadInput(f"{src}: no such directory")
    real_src, real_dst = src.resolve(), dst.resolve()
    if real_dst == real_src:
        raise BadInput(f"{dst}: is the source folder {src}{_resolved(dst, real_dst)}; choose another destination")
    if real_dst.is_relative_to(real_src):
        raise BadInput(f"{dst}: is inside the source folder {src}{_resolved(dst, real_dst)}; choose a destination "
                       "outside it")
    if real_src.is_relative_to(real_dst):
        raise BadInput(f"{dst}: holds the source folder {src}{_resolved(dst, real_dst)}; replacing it would delete "
                       "the source")
    if (dst.exists() or dst.is_symlink()) and not force:
        raise BadInput(f"{dst}: already exists; pass --force to replace it")
    _check_creatable(dst, "destination")


def check_output_file(path, option: str, src=None) -> None:
    """An output file named by `option` checked before any work: not a folder, not a file of the source
    folder `src`, in an existing folder we may write in."""
    path = Path(path)
    if path.is_dir():
        raise BadInput(f"{option} {path}: is a directory")
    if not path.absolute().parent.is_dir():
        raise BadInput(f"{option} {path}: no such folder {path.absolute().parent}")
    if src is not None and path.resolve().is_relative_to(Path(src).resolve()):
        raise BadInput(f"{option} {path}: is inside the source folder {src}")
    if path.exists() and not os.access(path, os.W_OK):
        raise BadInput(f"{option} {path}: not writable")
    _check_creatable(path, option)


def _check_creatable(path: Path, what: str) -> None:
    """The nearest existing folder above `path` is a folder we may write in (mkdir creates the rest)."""
    parent = path.absolute().parent
    while not parent.exists() and not parent.is_symlink():
        parent = parent.parent
    if not parent.is_dir():
        raise BadInput(f"{what} {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BadInput(f"{what} {path}: cannot write in {parent} (permission denied or a read-only file system)")


def _resolved(path: Path, real: Path) -> str:
    return f" (it resolves to {real})" if path.absolute() != real else ""


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
        out = numpy_dtype(dtype) if dtype else stored
        out = out if _floating(stored) else stored
        plan[name] = (canonical, checkpoint.rules.rules.rule_for(canonical)[1], action, out)
        specs.append((name, out, _target_shape(target, canonical, shapes[canonical])))
    for copy, canonical in target.tied.get(checkpoint.head, {}).items() if target.writes_tied else ():
        if canonical in checkpoint.stored and copy not in plan:
            plan[copy] = plan[target.rules.rule_for(canonical)[0]]
            specs.append((copy, plan[copy][3], _target_shape(target, canonical, shapes[canonical])))
    return plan, specs


def _producer(checkpoint: Checkpoint, plan: dict, strict: bool, warnings: list, warn):
    """(make, warn_or_fail): make(target name) -> (the array in the target layout and dtype, what is wrong with it
    or None), run by the prefetch threads; warn_or_fail(made) -> the array, after NaN/Inf warn or, strict, fail, run
    by the writer as it takes each array: warnings come in the writer's order whatever thread found them."""
    weights = checkpoint.source.weights_file

    def make(name: str) -> tuple[np.ndarray, str | None]:
        canonical, src_action, dst_action, dtype = plan[name]
        array = checkpoint.ref(canonical).load()
        if src_action != dst_action:  # one action on both sides means both store the same layout
            array = ACTIONS[dst_action][0](ACTIONS[src_action][1](array))
        problem = None if _finite(array) else "holds NaN or Inf values"
        if array.dtype != dtype:
            with np.errstate(over="ignore"):  # reported below
                array = array.astype(dtype)
            problem = problem or (None if _finite(array) else f"overflows {dtype.name}")
        return array, problem and f"{weights}: {checkpoint.stored[canonical]} {problem}"

    def warn_or_fail(made: tuple[np.ndarray, str | None]) -> np.ndarray:
        array, message = made
        if message:
            if strict:
                raise WeightsError(message)
            warnings.append(message)
            warn(message + " (--strict makes this an error)")
        return array

    return make, warn_or_fail


class Prefetcher:
    """produce(name) for writers that ask in `order`: while the writer writes one tensor, `ahead` threads read
    and transform the next ones (file I/O, numpy copies and OpenBLAS transposes release the GIL). `ahead`
    tensors more in memory."""

    def __init__(self, order: list, make, ahead: int = 1):
        self.make, self.pool, self.pending = make, ThreadPoolExecutor(ahead), {}
        self.position = {name: index for index, name in enumerate(order)}
        self.order, self.ahead = order, ahead

    def __call__(self, name: str) -> np.ndarray:
        future = self.pending.pop(name, None) or self.pool.submit(self.make, name)
        index = self.position.get(name)
        for following in self.order[index + 1:index + 1 + self.ahead] if index is not None else ():
            if following not in self.pending:
                self.pending[following] = self.pool.submit(self.make, following)
        return future.result()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.pool.shutdown(wait=True, cancel_futures=True)


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
    tmp = partial_path(path)
    shutil.rmtree(tmp, ignore_errors=True)
    try:  # from the mkdir on: a Ctrl-C right after it must still remove it
        tmp.mkdir()
        yield tmp
        if path.exists() or path.is_symlink():
            if not replace:
                raise BadInput(f"{path}: already exists; pass --force to replace it")
            if not _exchange(tmp, path):  # then `tmp` holds the old output, removed below
                old = path.with_name(f".{path.name}.old-{os.getpid()}")
                os.replace(path, old)
                os.replace(tmp, path)
                shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
        else:
            os.replace(tmp, path)
    finally:
        if tmp.is_symlink() or tmp.is_file():  # the replaced output was a link or a file
            tmp.unlink()
        shutil.rmtree(tmp, ignore_errors=True)


def _exchange(new: Path, old: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE): DST is always either the old or the
    new output, and a kill leaves at most `.DST.partial-PID`, which the next run removes. False where the
    system or file system cannot (then DST is replaced in two renames)."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # not glibc 2.28+
        return False
    at_cwd, rename_exchange = -100, 2
    if renameat2(at_cwd, os.fsencode(new), at_cwd, os.fsencode(old), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(old))


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
    checkpoint = open_checkpoint(fmt, path, family, head, allow_unknown)
    try:
        return run_backend(family, fw, checkpoint.config, head, checkpoint.params(), inputs, "float32", backward=False)
    finally:
        checkpoint.close()
