"""Checkpoint converters between transformers (PyTorch, TF), PaddleNLP and Google's TF1 BERT formats.

`python -m converters --help` lists the commands. Reading and writing the formats lives below the converters,
in backends.checkpoints (`open_checkpoint` reads any supported format through canonical names), which parity
and tasks use too.

The names below are imported when first used: `python -m converters` imports this package before its
`__main__`, which must install its signal handling before numpy and the formats load (a Ctrl-C in the
first half second would otherwise end in a traceback).
"""
from importlib import import_module

_EXPORTS = {"COMMANDS": ".core", "Options": ".core", "convert": ".core", "Checkpoint": "backends.checkpoints",
            "open_checkpoint": "backends.checkpoints"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name], __name__), name)
