"""Checkpoint converters between transformers (PyTorch, TF), PaddleNLP and Google's TF1 BERT formats.

`python -m converters --help` lists the commands. Reading and writing the formats lives below the converters,
in backends.checkpoints (`open_checkpoint` reads any supported format through canonical names), which parity
and tasks use too.
"""
from backends.checkpoints import Checkpoint, open_checkpoint

from .core import COMMANDS, Options, convert

__all__ = ["COMMANDS", "Checkpoint", "Options", "convert", "open_checkpoint"]
