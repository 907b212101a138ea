"""Model folders: a preset or a saved model made ready for a task head, and saving one any backend loads.

A model folder is any checkpoint directory backends.checkpoints reads (transformers PyTorch or TF,
PaddleNLP, our own saves), opened partially: the parameters the task head shares with the stored head
are taken (a bare body's names lack the task head's `bert.`-like prefix), what the folder lacks (a fresh
task head) gets the family's numpy init, the same in every framework, and stored tensors the task does not
use (pre-training heads) are listed in a note. A saved model is transformers' layout: model.safetensors
(canonical = transformers PyTorch names), config.json (the family config) and the tokenizer files.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from backends import FAMILIES, family, family_marker, family_of_config, presets
from backends.checkpoints import detect_format, open_checkpoint
from backends.checkpoints.adapters import check_base, expected_shapes, is_adapter_folder, read_adapter_folder, \
    write_adapter_folder
from backends.checkpoints.rules import format_rules
from backends.errors import BadInput
from backends.tensorfile import save_arrays

from .adapters import AdapterSetup, fresh_adapter, trainable_names, with_adapter
from .loop import WEIGHTS_FILE
from .task import TaskError

CONFIG_FILE = "config.json"


@dataclass
class ModelSource:
    """A family config and canonical parameters for one head; `fresh` were initialised, `unused` ignored."""

    family: str
    config: object
    head: str
    params: dict
    folder: Path | None = None  # where the model (and usually its tokenizer) came from
    fresh: list = field(default_factory=list)
    unused: list = field(default_factory=list)
    seed: int = 0  # of the fresh parameters' init
    adapter_name: str | None = None  # an adapter run: config.adapter holds its config string
    trainable: frozenset | None = None  # the parameters to train (None: all); an adapter run's are saved alone


def family_of(config_path: Path) -> str:
    """The family of a model folder's config.json (backends.family_of_config)."""
    try:
        data = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TaskError(f"{config_path}: not a readable config.json ({exc})") from None
    name = family_of_config(data, str(config_path))
    if name is None:
        raise TaskError(f"{config_path}: no model_type; families: {', '.join(FAMILIES)}")
    return name


def parse_overrides(text: str | None) -> dict:
    """"key=value,key=value" (values read as JSON when they parse, else as strings) -> dict."""
    overrides = {}
    for item in filter(None, (text or "").split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise TaskError(f"--config-overrides: {item!r} is not key=value")
        try:
            overrides[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key.strip()] = value
    return overrides


def load_model(model: str, head: str, num_labels: int | None = None, overrides: dict | None = None,
               seed: int = 0) -> ModelSource:
    """A preset (fresh numpy init) or a model folder (a checkpoint, or config.json alone) for `head`."""
    known = presets()
    if model in known:
        name, config, folder, checkpoint = known[model].family, known[model].config, None, None
    else:
        folder = Path(model)
        if is_adapter_folder(folder) and not (folder / CONFIG_FILE).is_file():
            raise TaskError(f"--model {model} is an adapter-only folder: give its base model as --model and "
                            f"--load-adapter {model}")
        if not (folder / CONFIG_FILE).is_file():
            raise TaskError(f"--model {model}: neither a preset nor a folder with {CONFIG_FILE}")
        checkpoint = _open_folder(folder)
        if checkpoint is None:
            name = family_of(folder / CONFIG_FILE)
            config = family(name).config_class.from_json_file(folder / CONFIG_FILE)
        else:
            name, config = checkpoint.family, checkpoint.config
    try:
        spec = family(name)
        if head not in spec.heads:
            raise TaskError(f"--model {model}: family {name} has no {head} head (heads: {', '.join(spec.heads)})")
        changes = dict(overrides or {})
        if num_labels is not None:
            changes["num_labels"] = num_labels
        unknown = [key for key in changes if not hasattr(config, key)]
        if unknown:
            raise TaskError(f"--config-overrides: {name} configs have no {', '.join(unknown)}")
        config = config.replace(**changes)
        params = spec.init_params(config, head, np.random.default_rng(seed))
        fresh, unused = list(params), []
        if checkpoint is not None:
            stored, fresh, unused = checkpoint.params_for(head, spec.param_shapes(config, head))
            params.update(stored)
            unused += checkpoint.skipped
    finally:
        if checkpoint is not None:
            checkpoint.close()
    return ModelSource(name, config, head, params, folder, fresh, unused, seed=seed)


def attach_adapter(source: ModelSource, setup: AdapterSetup | None, load_from=None, model: str = "") -> ModelSource:
    """`source` with an adapter: a fresh one (`setup`: config string and name) or the adapter and task head of the
    adapter-only folder `load_from`; the base model is frozen (`trainable`: the adapter and the task head)."""
    stored = None
    if load_from is not None:
        stored = read_adapter_folder(load_from)
        check_base(stored, source.family, source.config, f"--model {model}")
        if stored.head != source.head:
            raise TaskError(f"--load-adapter {load_from}: its head is {stored.head}; this task needs {source.head}")
        if setup is not None and setup.config != stored.adapter:
            raise TaskError(f"--adapter-config {setup.config} differs from the adapter in {load_from} "
                            f"({stored.adapter}); leave --adapter-config out to continue that one")
        setup = AdapterSetup(stored.adapter, stored.name)
    config = with_adapter(source.config, setup)
    params, fresh = dict(source.params), list(source.fresh)
    if stored is None:
        adapter = fresh_adapter(source.family, config, source.head, setup, source.seed)
        fresh += list(adapter)
    else:
        head_shapes = expected_shapes(source.family, config, source.head, setup.name)[1]
        for key, array in stored.head_params.items():
            if tuple(array.shape) != head_shapes[key]:  # num_labels of another task
                raise TaskError(f"--load-adapter {load_from}: {key} has shape {list(array.shape)}, this task's "
                                f"{source.head} head needs {list(head_shapes[key])}")
        adapter = stored.params
        fresh = [key for key in fresh if key not in adapter]
    params.update(adapter)
    return replace(source, config=config, params=params, fresh=fresh, adapter_name=setup.name,
                   trainable=trainable_names(params, source.family, config))


def _open_folder(folder: Path):
    """The folder's checkpoint opened partially, or None when it holds a config but no weights file."""
    try:
        fmt = detect_format(folder)
    except BadInput:
        return None
    return open_checkpoint(fmt, folder, partial=True)


def save_model(folder, source: ModelSource, params: dict, tokenizer=None) -> None:
    """model.safetensors (canonical names), config.json and the tokenizer files, as transformers lays them out; an
    adapter run's adapter and head alone (backends/checkpoints/adapters.py: the `adapters` library's layout)."""
    folder = Path(folder)
    if source.adapter_name is not None:  # the adapter and the head alone, in the `adapters` library's layout
        write_adapter_folder(folder, "hf", source.family, source.config, source.head, source.adapter_name, params)
        return
    folder.mkdir(parents=True, exist_ok=True)
    save_arrays(folder / WEIGHTS_FILE, params, metadata={"format": "pt"})  # transformers checks the format tag
    classes = format_rules(source.family, "hf").classes
    config = {**source.config.to_dict(), **family_marker(source.family)}
    if source.head in classes:
        config["architectures"] = [classes[source.head]]
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder))
