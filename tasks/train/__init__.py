"""Fine-tuning on any backend: a framework-free driver (`loop.py`) over one small step module per framework.

Each framework's `backends/_fw/<key>/train.py` defines the same `Runner` (model, AdamW, clipping,
optimizer state by canonical name) and the same op set the framework-free losses call
(`losses.py`, `tasks/distill.py`): `backends._fw.contract` writes both down. `runner_class(backend)`
imports only the chosen framework.
"""
from __future__ import annotations

import importlib

from backends import FRAMEWORKS


def step_module(backend: str):
    """backends/_fw/<backend>/train.py: the Runner and op set of `backend` (imports that framework only)."""
    if backend not in FRAMEWORKS:
        raise KeyError(f"unknown backend {backend!r}; known: {', '.join(FRAMEWORKS)}")
    return importlib.import_module(f"backends._fw.{backend}.train")


def runner_class(backend: str):
    return step_module(backend).Runner
