"""python -m converters COMMAND SRC DST: move a checkpoint between transformers (PyTorch, TF), PaddleNLP
and Google's TF1 BERT formats. Exit codes: 0 done, 1 --verify found a difference, 2 bad input."""
from __future__ import annotations

import os
import signal
import sys

INTERRUPTED = "interrupted: nothing written"  # the one line of a Ctrl-C or SIGTERM, early or mid-conversion


def _exit_early(signum, frame):
    """Ctrl-C or SIGTERM before the conversion starts (while numpy, the formats and the frameworks load):
    nothing was written yet; exit without a traceback. os._exit, not sys.exit: the signal can land inside an
    extension module's own import (numpy's C core importing datetime), which turns any exception raised there,
    SystemExit included, into an ImportError with a traceback."""
    print(INTERRUPTED, file=sys.stderr, flush=True)
    os._exit(130)


if __name__ == "__main__":  # first of all: the imports below take half a second or more
    signal.signal(signal.SIGINT, _exit_early)
    signal.signal(signal.SIGTERM, _exit_early)

import argparse  # noqa: E402
import ctypes  # noqa: E402
import json  # noqa: E402

from backends.checkpoints import formats  # noqa: E402
from backends.errors import BadInput  # noqa: E402

from .core import COMMANDS, DTYPES, Options, VerifyFailed, check_output_file, convert  # noqa: E402

READS = {
    "hf": "a transformers PyTorch directory (config.json + model.safetensors, sharded safetensors or "
          "pytorch_model.bin)",
    "tf": "a transformers TensorFlow directory (config.json + tf_model.h5 or its shards and index)",
    "paddle": "a PaddleNLP directory (model_state.pdparams or its shards and index + config.json or "
              "model_config.json)",
    "tf1bert": "Google's TF1 BERT directory (bert_model.ckpt.* + bert_config.json + vocab.txt)",
}
WRITES = {  # beyond --max-shard-size, the weights file is shards and an index, as save_pretrained writes them
    "hf": "config.json + model.safetensors (or model-0000i-of-0000n.safetensors + model.safetensors.index.json), "
          "which transformers' <Class>.from_pretrained loads",
    "tf": "config.json + tf_model.h5 (or tf_model-0000i-of-0000n.h5 + tf_model.h5.index.json), which "
          "transformers' TF<Class>.from_pretrained loads",
    "paddle": "model_state.pdparams (or model_state-0000i-of-0000n.pdparams + model_state.pdparams.index.json) + "
              "config.json + model_config.json, which paddlenlp.transformers.<Class>.from_pretrained loads",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m converters", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command, (src, dst) in COMMANDS.items():
        sub = commands.add_parser(
            command, help=f"{formats.get(src).TITLE} -> {formats.get(dst).TITLE}",
            description=f"Read {READS[src]};\nwrite {WRITES[dst]}, as do our ports.\n\n"
            "Tensors stream one at a time into a temporary directory renamed to DST at the end; tokenizer "
            "files are carried along. Every stored entry is accounted for: missing parameters and unknown "
            "entries fail (exit 2) unless allowed by name. An adapter-only folder (adapter_config.json, as python -m "
            "tasks finetune --train-adapter writes) moves the same way between the hf, paddle and tf forms.",
            formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.add_argument("src", metavar="SRC", help=f"source directory ({src})")
        sub.add_argument("dst", metavar="DST", help=f"directory to create ({dst})")
        sub.add_argument("--family", help="model family (default: the config's model_type)")
        sub.add_argument("--head", help="head to convert (default: the one whose parameters the checkpoint holds); "
                                        "parameters of the checkpoint's other heads are left out and reported")
        sub.add_argument("--dtype", choices=DTYPES, help="cast floating tensors (default: keep the stored dtypes)")
        sub.add_argument("--max-shard-size", metavar="SIZE",
                         help="split the weights into shards of at most SIZE with an index, as save_pretrained does "
                              "(5GB, 500MB, 1GiB or bytes; a tensor larger than SIZE gets a shard of its own; default: "
                              f"{formats.get(dst).MAX_SHARD_SIZE}, save_pretrained's)")
        sub.add_argument("--verify", action="store_true",
                         help="run source and result through our ports (PyTorch and the target's framework) "
                              "and fail (exit 1) if the outputs differ")
        sub.add_argument("--force", action="store_true", help="replace DST if it exists")
        sub.add_argument("--strict", action="store_true",
                         help="NaN or Inf in a weight, or an optional part the target class treats otherwise than the "
                              "checkpoint (a pooler it must initialise or does not use), is an error, not a note")
        sub.add_argument("--allow-unknown", action="append", default=[], metavar="REGEX",
                         help="skip stored entries whose stored name matches REGEX instead of failing (repeatable)")
        sub.add_argument("--no-tokenizer", action="store_true",
                         help="convert weights and config alone: no vocabulary required, no tokenizer files copied")
        sub.add_argument("--json", metavar="PATH", help="write a JSON summary")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    options = Options(family=args.family, head=args.head, dtype=args.dtype, force=args.force, strict=args.strict,
                      verify=args.verify, allow_unknown=tuple(args.allow_unknown), tokenizer=not args.no_tokenizer,
                      max_shard_size=args.max_shard_size)
    try:
        _unwind_on_signals()
        if args.json:  # checked before any work: a conversion must not fail after writing its output
            check_output_file(args.json, "--json", args.src)
        summary = convert(args.command, args.src, args.dst, options)
        if args.json:
            with open(args.json, "w") as out:
                json.dump(summary, out, indent=2)
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except VerifyFailed as exc:
        print(f"verify failed: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130
    shards = f" ({summary['weights_files']} shards)" if summary["weights_files"] > 1 else ""
    checked = f", verified ({summary['verify']['max_abs_diff']:.2g} max diff)" if summary["verify"] else ""
    print(f"{args.command}: {summary['family']} {summary['head']}, {summary['tensors']} tensors, "
          f"{summary['bytes'] / 1e6:.1f} MB -> {args.dst}{shards} in {summary['seconds']:.1f} s{checked}")
    return 0


def _reuse_freed_memory() -> None:
    """glibc maps every allocation over 32 MiB afresh and unmaps it when freed, so each tensor-sized buffer
    would be page-faulted in again (most of a large conversion's time); from the heap, freed buffers are
    reused. Peak memory is unchanged: one or two tensors."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return
    libc.mallopt(-4, 0)  # M_MMAP_MAX: no mmap'ed chunks
    libc.mallopt(-1, 2**31 - 1)  # M_TRIM_THRESHOLD (an int): keep freed memory for the next tensor


def _terminate(signum, frame):
    raise KeyboardInterrupt  # unwinds like Ctrl-C: the temporary output is removed


def _unwind_on_signals() -> None:
    """From here on Ctrl-C and SIGTERM unwind the conversion (its temporary output is removed), when the
    early exit is installed (the command line, not a caller of main())."""
    if signal.getsignal(signal.SIGINT) is _exit_early:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _terminate)


if __name__ == "__main__":
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _reuse_freed_memory()
    sys.exit(main())
