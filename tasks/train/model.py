"""Model folders: a preset or a saved model made ready for a task head, and saving one any backend loads.

A saved model is transformers' layout: model.safetensors (canonical = transformers PyTorch names),
config.json (the family config) and the tokenizer files. Loading matches the head's canonical names
to the file's, with or without the base-model prefix (a transformers BertModel folder has no "bert."),
and initialises what the file lacks (a fresh task head) with the family's numpy init, the same in
every framework.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from backends import FAMILIES, family, family_marker, family_of_config, presets
from backends.errors import WeightsError
from backends.tensorfile import SafetensorsReader, save_arrays

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
    """A preset (fresh numpy init) or a model folder (config.json, optional model.safetensors) for `head`."""
    known = presets()
    if model in known:
        name, config, folder, stored = known[model].family, known[model].config, None, {}
    else:
        folder = Path(model)
        if not (folder / CONFIG_FILE).is_file():
            raise TaskError(f"--model {model}: neither a preset nor a folder with {CONFIG_FILE}")
        name = family_of(folder / CONFIG_FILE)
        config = family(name).config_class.from_json_file(folder / CONFIG_FILE)
        weights = folder / WEIGHTS_FILE
        stored = SafetensorsReader(weights) if weights.is_file() else {}
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
    params, fresh, unused = head_params(spec, config, head, stored, seed, source=str(model))
    return ModelSource(name, config, head, params, folder, fresh, unused)


def head_params(spec, config, head: str, stored, seed: int, source: str):
    """(params, fresh, unused): the head's canonical parameters from `stored` (names with or without the
    base-model prefix), the family's numpy init for the ones it lacks, and the stored names not used."""
    shapes = spec.param_shapes(config, head)
    params = spec.init_params(config, head, np.random.default_rng(seed))
    fresh, used = [], set()
    for name, shape in shapes.items():
        found = next((key for key in (name, name.partition(".")[2]) if key in stored), None)
        if found is None:
            fresh.append(name)
            continue
        array = stored[found]
        if tuple(array.shape) != tuple(shape):
            raise WeightsError(f"{source}: {found} has shape {list(array.shape)}, the {head} head needs {list(shape)}")
        params[name] = array
        used.add(found)
    return params, fresh, [key for key in stored if key not in used]


def save_model(folder, source: ModelSource, params: dict, tokenizer=None) -> None:
    """model.safetensors (canonical names), config.json and the tokenizer files, as transformers lays them out."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_arrays(folder / WEIGHTS_FILE, params, metadata={"format": "pt"})  # transformers checks the format tag
    config = {**source.config.to_dict(), **family_marker(source.family)}
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder))
