"""Adapter-only checkpoints: an adapter and its task head without the base model, in the `adapters` library's layout.

A folder holds what `adapters` 1.3's `model.save_adapter(DIR, name, use_safetensors=True)` writes for a
transformers task class (`BertForSequenceClassification` with `adapters.init`):
    adapter_config.json      {"config": <the method's config dict>, "name", "model_type", "hidden_size",
                              "model_class", "model_name", "version": "adapters.1.3.0"} plus our "parity" key
    head_config.json         {"config": null, "name": null, "model_class", "num_labels", "label2id", ...}
    adapter.safetensors      the adapter's parameters under the library's state_dict names
    model_head.safetensors   the task head's (`classifier.weight`, ...)
so that `model.load_adapter(DIR, use_safetensors=True)` loads it (the library's default torch.save form,
pytorch_adapter.bin / pytorch_model_head.bin, is read too). The "parity" key is what our loader needs to
rebuild the run: the family, the head, the adapter's config string and the full model config the adapter
was trained on (the library keeps only model_type and hidden_size). The library ignores keys it does not know.

Other frameworks keep the same JSON files and store the weights as their port loads them (the family's port
rules: names, and Linear kernels [in, out] for paddle and tf; the adapter under the ports' name "adapter"): `adapter.pdparams` / `model_head.pdparams`
(paddle.save's format), `tf_adapter.safetensors` / `tf_model_head.safetensors`. The converters move a folder
between these forms like a model.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import backends
from backends.errors import BadInput, ConfigError, WeightsError
from backends.tensorfile import SafetensorsReader, numpy_dtype, save_arrays
from backends.weights import check_finite

from . import formats
from .rules import format_rules

ADAPTER_CONFIG = "adapter_config.json"
HEAD_CONFIG = "head_config.json"
LIBRARY_VERSION = "adapters.1.3.0"  # the version our files say wrote them: the one whose layout they follow
OUR_KEY = "parity"
# format -> (adapter weights, head weights); "hf" is the library's own (safetensors) form
FILES = {"hf": ("adapter.safetensors", "model_head.safetensors"),
         "paddle": ("adapter.pdparams", "model_head.pdparams"),
         "tf": ("tf_adapter.safetensors", "tf_model_head.safetensors")}
TORCH_FILES = ("pytorch_adapter.bin", "pytorch_model_head.bin")  # the library's default form, read as "hf"
FRAMEWORK_OF = {"hf": "torch", "paddle": "paddle", "tf": "tf"}  # whose port layout each format stores


@dataclass
class AdapterFolder:
    """An adapter-only checkpoint: the model config it was trained with (its `adapter` field set), the adapter's
    name, the head and the adapter and head parameters in canonical names and layouts (the adapter's under the
    name the ports give it, `backends.adapters.DEFAULT_NAME`: `name` is the one its files use)."""

    path: Path
    fmt: str
    family: str
    config: object
    head: str
    name: str
    adapter_params: dict
    head_params: dict

    @property
    def adapter(self) -> str:
        return self.config.adapter

    @property
    def params(self) -> dict:
        return {**self.adapter_params, **self.head_params}


def is_adapter_folder(path) -> bool:
    """A folder holding adapter_config.json: an adapter-only checkpoint (a model folder never holds one)."""
    return (Path(path) / ADAPTER_CONFIG).is_file()


def renamed(params: dict, old: str, new: str) -> dict:
    """Adapter parameters of adapter `old` named for adapter `new` (the library's AdapterLoader.rename_func)."""
    if old == new:
        return dict(params)
    return {key.replace(f"adapters.{old}.", f"adapters.{new}.").replace(f".loras.{old}.", f".loras.{new}."): value
            for key, value in params.items()}


def head_names(names, family: str, config) -> list[str]:
    """The task head's own parameters among `names` (a base-model head has none): not an adapter's, and outside
    the base model's prefix: the family's (`bert.`), or the base family's for a family that rewires another's
    layers under its names (the DeFormer's `base_family`). The library's PredictionHeadLoader takes the same."""
    from backends.adapters import is_adapter_param

    prefix = (getattr(config, "base_family", None) or family) + "."
    names = list(names)
    prefixed = any(name.startswith(prefix) for name in names)
    return [name for name in names if prefixed and not name.startswith(prefix) and not is_adapter_param(name)]


def stored_adapter_name(fmt: str, name: str) -> str:
    """The adapter name in a format's weight names: the library's files use the adapter's own name (its
    load_adapter renames), our ports' forms the name the ports give every adapter (DEFAULT_NAME), so that the
    port's own loader (paddle's set_state_dict) takes the file as it is; adapter_config.json keeps the name."""
    from backends.adapters import DEFAULT_NAME

    return name if fmt == "hf" else DEFAULT_NAME


def expected_shapes(family: str, config, head: str, name: str) -> tuple[dict, dict]:
    """({adapter parameter: shape}, {head parameter: shape}) of a `head` model of `family` with config's adapter
    (named `name`)."""
    from backends.adapters import adapter_param_shapes

    base = backends.family(family).param_shapes(config.replace(adapter=None), head)
    head_shapes = {key: tuple(base[key]) for key in head_names(base, family, config)}
    adapter = {key: tuple(shape) for key, shape in adapter_param_shapes(family, config, config.adapter, name,
                                                                        head).items()}
    return adapter, head_shapes


def write_adapter_folder(path, fmt: str, family: str, config, head: str, name: str, params: dict,
                         dtype: str | None = None) -> None:
    """Write the adapter and head parameters among `params` (canonical, the adapter under the ports' name; others
    are ignored) into folder `path` in format `fmt` ("hf", "paddle", "tf"), the adapter named `name`; `dtype`
    casts floating tensors (None keeps theirs)."""
    if fmt not in FILES:
        raise BadInput(f"adapter checkpoints are stored as {', '.join(FILES)}, not {fmt!r}")
    from backends.adapters import DEFAULT_NAME, parse_adapter_config
    from backends.adapters.config import check_name

    check_name(name)
    stored_name = stored_adapter_name(fmt, name)
    params = renamed(params, DEFAULT_NAME, stored_name)
    adapter_shapes, head_shapes = expected_shapes(family, config, head, stored_name)
    missing = [key for key in (*adapter_shapes, *head_shapes) if key not in params]
    if missing:
        raise WeightsError(f"{path}: cannot write the adapter without {', '.join(missing[:4])}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    common = {"model_type": config.model_type, "hidden_size": getattr(config, "hidden_size", None),
              "model_class": _model_class(family, head), "model_name": "", "version": LIBRARY_VERSION}
    ours = {"family": family, "head": head, "adapter": config.adapter, "format": fmt, "model_config": config.to_dict()}
    formats.write_json(path / ADAPTER_CONFIG, {**common, "config": parse_adapter_config(config.adapter).to_dict(),
                                               "name": name, OUR_KEY: ours})
    num_labels = getattr(config, "num_labels", None)
    head_config = {**common, "config": None, "name": None}
    if num_labels is not None:
        head_config.update(num_labels=num_labels, label2id={f"LABEL_{i}": i for i in range(num_labels)})
    formats.write_json(path / HEAD_CONFIG, head_config)
    for file, shapes in zip(FILES[fmt], (adapter_shapes, head_shapes)):
        _write_weights(path / file, fmt, family, {key: params[key] for key in shapes}, dtype)


def _model_class(family: str, head: str) -> str | None:
    return _classes(family).get(head)


def _write_weights(file: Path, fmt: str, family: str, params: dict, dtype: str | None) -> None:
    rules = backends.family(family).port_rules[FRAMEWORK_OF[fmt]]
    stored = {}
    for key, array in params.items():
        array = np.asarray(array)
        if dtype is not None and np.issubdtype(array.dtype, np.floating):
            array = array.astype(numpy_dtype(dtype))
        target, value = rules.to_target(key, array) if fmt != "hf" else (key, array)
        stored[target] = np.ascontiguousarray(value)
    if fmt == "paddle":
        formats.get("paddle").write_shard(file, [(k, v.dtype, v.shape) for k, v in stored.items()],
                                               stored.__getitem__)
    else:
        save_arrays(file, stored, metadata={"format": "pt" if fmt == "hf" else "tf"})


def read_adapter_folder(path, base: Callable[[], tuple] | None = None) -> AdapterFolder:
    """An adapter-only checkpoint, every file and tensor checked: one-line errors name the file and key.

    A folder the `adapters` library saved itself (`model.save_adapter(DIR, name, with_head=True)` on a
    transformers task class with `adapters.init`) lacks our "parity" key: `base()` = (family, config) of the base
    model it goes on then supplies what the library does not keep (see `_library_description`); it is called only
    for such a folder, so a folder of ours never opens the base model's checkpoint here."""
    from backends.adapters import DEFAULT_NAME, parse_adapter_config

    path = Path(path)
    if not path.is_dir():
        raise BadInput(f"{path}: no such directory")
    config_file = path / ADAPTER_CONFIG
    data = formats.read_json(config_file)
    ours = data.get(OUR_KEY)
    if ours is None and base is not None:
        ours = _library_description(path, data, *base())
    if not isinstance(ours, dict):
        raise ConfigError(f"{config_file}: no {OUR_KEY!r} key (the family, head and model config it was trained "
                          "with): a folder saved by the adapters library is read given its base model (--model)")
    for key, kind in (("family", str), ("head", str), ("adapter", str), ("format", str), ("model_config", dict)):
        if not isinstance(ours.get(key), kind):
            raise ConfigError(f"{config_file}: {OUR_KEY}.{key} is {ours.get(key)!r}")
    family, head, fmt, name = ours["family"], ours["head"], ours["format"], data.get("name")
    if family not in backends.FAMILIES:
        raise ConfigError(f"{config_file}: {OUR_KEY}.family {family!r} is not a family ({', '.join(backends.FAMILIES)})")
    spec = backends.family(family)
    if head not in spec.heads:
        raise ConfigError(f"{config_file}: {OUR_KEY}.head {head!r}: family {family} has heads {', '.join(spec.heads)}")
    if fmt not in FILES:
        raise ConfigError(f"{config_file}: {OUR_KEY}.format {fmt!r} is not one of {', '.join(FILES)}")
    if not isinstance(name, str) or not name.isidentifier():
        raise ConfigError(f"{config_file}: name {name!r} is not an adapter name")
    parse_adapter_config(ours["adapter"])  # an unknown method or key fails here, naming it
    config = spec.config_class.from_dict({**ours["model_config"], "adapter": ours["adapter"]}, source=str(config_file))
    stored_name = stored_adapter_name(fmt, name)
    adapter_shapes, head_shapes = expected_shapes(family, config, head, stored_name)
    files = FILES[fmt]
    if fmt == "hf" and not (path / files[0]).is_file() and (path / TORCH_FILES[0]).is_file():
        files = TORCH_FILES
    adapter_params = _read_weights(path / files[0], fmt, family, adapter_shapes)
    head_params = _read_weights(path / files[1], fmt, family, head_shapes)
    return AdapterFolder(path, fmt, family, config, head, name, renamed(adapter_params, stored_name, DEFAULT_NAME),
                         head_params)


def _library_description(path: Path, data: dict, family: str, config) -> dict:
    """Our "parity" description of a folder the `adapters` library saved, given the base model's family and config:
    the method from the library's "config" dict (as a config string), the head from head_config.json's
    transformers class (a static head: the library's flex heads of *AdapterModel classes are not read), the
    label count from it too; the weights are the library's safetensors or torch files ("hf")."""
    from backends.adapters.config import config_string_from_dict

    config_file, head_file = path / ADAPTER_CONFIG, path / HEAD_CONFIG
    adapter = config_string_from_dict(data.get("config"), f"{config_file}: config")
    if not head_file.is_file():
        raise ConfigError(f"{path}: no {HEAD_CONFIG}: an adapter saved without its head "
                          "(save it with with_head=True on a transformers task class)")
    head_config = formats.read_json(head_file)
    model_class = head_config.get("model_class")
    if head_config.get("config") is not None:
        raise ConfigError(f"{head_file}: a flex head of {model_class} (the library's *AdapterModel classes) is not "
                          "read; save the adapter from a transformers task class (e.g. BertForSequenceClassification "
                          "with adapters.init)")
    heads = {name: head for head, name in _classes(family).items()}
    if model_class not in heads:
        raise ConfigError(f"{head_file}: model_class {model_class!r} is not a {family} task class "
                          f"({', '.join(heads)})")
    hidden = data.get("hidden_size")
    if hidden is not None and hidden != getattr(config, "hidden_size", hidden):
        raise BadInput(f"{config_file}: an adapter for a base model with hidden_size {hidden}; the base model has "
                       f"hidden_size {config.hidden_size}")
    changes = {"adapter": adapter}
    if isinstance(head_config.get("num_labels"), int) and hasattr(config, "num_labels"):
        changes["num_labels"] = head_config["num_labels"]
    model_config = config.replace(**changes).to_dict()
    return {"family": family, "head": heads[model_class], "adapter": adapter, "format": "hf",
            "model_config": model_config}


def _classes(family: str) -> dict:
    try:
        return dict(format_rules(family, "hf").classes)
    except BadInput:  # a family without checkpoint rules: no transformers class
        return {}


def _read_weights(file: Path, fmt: str, family: str, shapes: dict) -> dict:
    """The canonical arrays of `shapes` from one weights file: every expected tensor present, nothing else,
    each of its shape and finite."""
    if not file.is_file():
        raise WeightsError(f"{file}: no such file")
    rules = backends.family(family).port_rules[FRAMEWORK_OF[fmt]]
    canonical_of = rules.target_names(shapes) if fmt != "hf" else {key: key for key in shapes}
    if fmt == "paddle":
        tensors, close = formats.get("paddle").read_state_file(file)
        loaders = {key: ref.load for key, ref in tensors.items()}
    elif file.suffix == ".bin":
        tensors, close = formats.get("hf")._open(file)
        loaders = {key: ref.load for key, ref in tensors.items()}
    else:
        reader, close = SafetensorsReader(file), (lambda: None)
        loaders = {key: (lambda key=key: reader[key]) for key in reader}
    try:
        missing = sorted(set(canonical_of) - set(loaders))
        unexpected = sorted(set(loaders) - set(canonical_of))
        if missing or unexpected:
            what = (f"lacks {', '.join(missing[:4])}" if missing else "") + ("; " if missing and unexpected else "") \
                + (f"holds unexpected {', '.join(unexpected[:4])}" if unexpected else "")
            raise WeightsError(f"{file}: {what} (an adapter of another config or base model?)")
        params = {}
        for stored, key in canonical_of.items():
            array = np.asarray(loaders[stored]())
            if formats.is_bfloat16(array.dtype):
                array = array.astype(np.float32)
            array = rules.to_canonical(key, array) if fmt != "hf" else array
            if tuple(array.shape) != shapes[key]:
                raise WeightsError(f"{file}: {stored} has shape {list(array.shape)}, the config needs "
                                   f"{list(shapes[key])}")
            check_finite(stored, array, str(file))
            params[key] = array
        return params
    finally:
        close()


# model config keys that size an adapter: the base model an adapter was trained on must have the same
SIZE_KEYS = ("hidden_size", "d_model", "num_hidden_layers", "block_sizes", "num_decoder_layers")


def check_base(adapter: AdapterFolder, family: str, config, where: str) -> None:
    """BadInput naming both when the base model (`family`, `config`, named `where`) is not the one the adapter was
    trained on: another family, hidden size or layer count."""
    if family != adapter.family:
        raise BadInput(f"{adapter.path}: an adapter for a {adapter.family} model; {where} is a {family} model")
    ours, theirs = _sizes(adapter.config), _sizes(config)
    if ours != theirs:
        raise BadInput(f"{adapter.path}: an adapter for a base model with {_describe(ours)}; {where} has "
                       f"{_describe(theirs)}")


def _sizes(config) -> dict:
    return {key: getattr(config, key) for key in SIZE_KEYS if hasattr(config, key)}


def _describe(sizes: dict) -> str:
    return ", ".join(f"{key} {value}" for key, value in sizes.items())
