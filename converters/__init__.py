"""Checkpoint converters between transformers (PyTorch, TF), PaddleNLP and Google's TF1 BERT formats.

`python -m converters --help` lists the commands; `open_checkpoint` reads any supported format through
canonical names, which is how our own ports load those files.
"""
from .core import COMMANDS, Checkpoint, Options, convert, open_checkpoint

__all__ = ["COMMANDS", "Checkpoint", "Options", "convert", "open_checkpoint"]
