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
from backends.checkpoints.adapters import check_base, is_adapter_folder, write_adapter_folder
from backends.checkpoints.rules import format_rules
from backends.errors import BadInput
from backends.tensorfile import save_arrays
from tasks.data.glue import canonical_task_name

from .adapters import AdapterSetup, trainable_names
from .loop import WEIGHTS_FILE
from .task import TaskError

CONFIG_FILE = "config.json"
FINETUNING_TASK = "finetuning_task"  # config.json: the task a model was fine-tuned on (transformers' key)
DEFORMER = "deformer"  # backends/deformer: a BERT or RoBERTa model's layers rewired for question and passage
DEFORMER_BASES = ("bert", "roberta")
# the DeFormer's layer split (encoder2_layers + assist_layers + encoder3_layers == num_hidden_layers) and the
# command-line options that set it, as --config-overrides would
SPLIT_OPTIONS = {"encoder2_layers": "--encoder2-layers", "assist_layers": "--assist-layers",
                 "encoder3_layers": "--encoder3-layers"}
DEFORMER_KEYS = (*SPLIT_OPTIONS, "max_question_length")


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


def refuse_adapter_folder(model: str) -> None:
    """TaskError when --model names an adapter-only folder (it holds no base model)."""
    if is_adapter_folder(model) and not (Path(model) / CONFIG_FILE).is_file():
        raise TaskError(f"--model {model} is an adapter-only folder: give its base model as --model and "
                        f"--load-adapter {model}")


def _open_model(model: str):
    """(family, config, folder, open checkpoint) of --model: a preset (no folder, no checkpoint) or a folder (its
    checkpoint opened partially; None when it holds config.json alone)."""
    known = presets()
    if model in known:
        return known[model].family, known[model].config, None, None
    folder = Path(model)
    refuse_adapter_folder(model)
    if not (folder / CONFIG_FILE).is_file():
        raise TaskError(f"--model {model}: neither a preset nor a folder with {CONFIG_FILE}")
    checkpoint = _open_folder(folder)
    if checkpoint is None:
        name = family_of(folder / CONFIG_FILE)
        return name, family(name).config_class.from_json_file(folder / CONFIG_FILE), folder, None
    return checkpoint.family, checkpoint.config, folder, checkpoint


def model_family_and_config(model: str) -> tuple[str, object]:
    """(family, config) of --model (a preset or a folder), nothing loaded."""
    name, config, _, checkpoint = _open_model(model)
    if checkpoint is not None:
        checkpoint.close()
    return name, config


def load_model(model: str, head: str, num_labels: int | None = None, overrides: dict | None = None,
               seed: int = 0, adapter: AdapterSetup | None = None) -> ModelSource:
    """A preset (fresh numpy init) or a model folder (a checkpoint, or config.json alone) for `head`; with
    `adapter`, the model has it (config field `adapter`) and the checkpoint's base model gets its fresh init."""
    name, config, folder, checkpoint = _open_model(model)
    try:
        name, config, changes = as_deformer(model, name, config, dict(overrides or {}))
        spec = family(name)
        if head not in spec.heads:
            raise TaskError(f"--model {model}: family {name} has no {head} head (heads: {', '.join(spec.heads)})")
        if num_labels is not None:
            changes["num_labels"] = num_labels
        unknown = [key for key in changes if not hasattr(config, key)]
        if adapter is not None:
            if not hasattr(config, "adapter"):
                raise TaskError(f"--model {model}: the {name} family takes no adapters")
            changes["adapter"] = adapter.config
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
    return ModelSource(name, config, head, params, folder, fresh, unused)


def split_overrides(args) -> dict:
    """--config-overrides with the layer-split options (--encoder2-layers ...) merged in; the same key given both
    ways with two values is an error."""
    overrides = parse_overrides(args.config_overrides)
    for key, option in SPLIT_OPTIONS.items():
        value = getattr(args, key, None)
        if value is None:
            continue
        if value < 0:
            raise TaskError(f"{option} must be 0 or more, not {value}")
        if overrides.get(key, value) != value:
            raise TaskError(f"{option} {value} and --config-overrides {key}={overrides[key]} disagree")
        overrides[key] = value
    return overrides


def as_deformer(model: str, name: str, config, overrides: dict) -> tuple[str, object, dict]:
    """(family, config, remaining overrides): a BERT or RoBERTa config given a layer split (or a
    max_question_length) becomes a DeFormer config over the same weights; a DeFormer config gets its split
    changed. The split must add up to the model's layers: a one-line error names the options and both numbers.
    Unset parts of a new split: encoder2_layers 0, assist_layers 0, encoder3_layers the rest."""
    given = {key: overrides.pop(key) for key in DEFORMER_KEYS if key in overrides}
    if not given:
        return name, config, overrides
    if name != DEFORMER:
        if name not in DEFORMER_BASES:
            raise TaskError(f"{', '.join(SPLIT_OPTIONS.get(key, key) for key in given)}: a DeFormer rewires a "
                            f"{' or '.join(DEFORMER_BASES)} model; --model {model} is a {name} model")
        if DEFORMER not in FAMILIES:
            raise TaskError(f"{', '.join(SPLIT_OPTIONS.get(key, key) for key in given)}: the {DEFORMER} family is "
                            "not installed (backends/deformer)")
        base = {"encoder2_layers": 0, "assist_layers": 0}
        base["encoder3_layers"] = config.num_hidden_layers - given.get("encoder2_layers", 0) \
            - given.get("assist_layers", 0)
        given = {**{key: base[key] for key in SPLIT_OPTIONS if key not in given}, **given}
        data = {**config.to_dict(), "base_family": name}
    else:
        data = config.to_dict()
    split = {key: given.get(key, data.get(key)) for key in SPLIT_OPTIONS}
    layers = data["num_hidden_layers"]
    if sum(split.values()) != layers or min(split.values()) < 0:
        parts = " + ".join(f"{SPLIT_OPTIONS[key]} {value}" for key, value in split.items())
        raise TaskError(f"{parts} = {sum(split.values())}: the split must add up to the model's {layers} layers "
                        f"(num_hidden_layers of --model {model})")
    config = family(DEFORMER).config_class.from_dict({**data, **given}, source=f"--model {model}")
    return DEFORMER, config, overrides


def attach_adapter(source: ModelSource, setup: AdapterSetup, stored=None, model: str = "") -> ModelSource:
    """`source` (built with the adapter in its config: a fresh adapter) as an adapter run: the base model frozen,
    the adapter and the task head trained; with `stored` (an AdapterFolder), its adapter and head replace the
    fresh ones, once its base model is checked to be this one."""
    params, fresh = dict(source.params), list(source.fresh)
    if stored is not None:
        check_base(stored, source.family, source.config, f"--model {model}")
        if stored.head != source.head:
            raise TaskError(f"--load-adapter {stored.path}: its head is {stored.head}; this task needs {source.head}")
        shapes = family(source.family).param_shapes(source.config, source.head)
        for key, array in stored.params.items():
            if tuple(array.shape) != tuple(shapes[key]):  # a head of another label count
                raise TaskError(f"--load-adapter {stored.path}: {key} has shape {list(array.shape)}, this task's "
                                f"{source.head} head needs {list(shapes[key])}")
        params.update(stored.params)
        fresh = [key for key in fresh if key not in stored.params]
    return replace(source, params=params, fresh=fresh, adapter_name=setup.name,
                   trainable=trainable_names(params, source.family, source.config))


def _open_folder(folder: Path):
    """The folder's checkpoint opened partially, or None when it holds a config but no weights file."""
    try:
        fmt = detect_format(folder)
    except BadInput:
        return None
    return open_checkpoint(fmt, folder, partial=True)


def same_task(first: str, second: str) -> bool:
    """Whether two task names (ours, or transformers' run_glue ones: "sst2", "SST-2") name the same task."""
    return canonical_task_name(first) == canonical_task_name(second)


def check_teacher_task(teacher: ModelSource, task, option: str = "--teacher") -> None:
    """TaskError when the teacher's config.json says it was fine-tuned on another task than `task` (a Task) trains
    (`finetuning_task`, which save_model and transformers' run_glue write; a config without it is not judged)."""
    fine_tuned_on = getattr(teacher.config, "extra", {}).get(FINETUNING_TASK)
    if task.fine_tunes and isinstance(fine_tuned_on, str) and not same_task(fine_tuned_on, task.name):
        raise TaskError(f"{teacher.folder / CONFIG_FILE}: the teacher was fine-tuned on {fine_tuned_on} "
                        f"({FINETUNING_TASK}); {option} must be a {task.name} model for --task {task.name}")


def save_model(folder, source: ModelSource, params: dict, tokenizer=None, task: str | None = None) -> None:
    """model.safetensors (canonical names), config.json and the tokenizer files, as transformers lays them out; an
    adapter run's adapter and head alone (backends/checkpoints/adapters.py: the `adapters` library's layout).
    `task`: the task the model was fine-tuned on, recorded as transformers' `finetuning_task`."""
    folder = Path(folder)
    if source.adapter_name is not None:  # the adapter and the head alone, in the `adapters` library's layout
        write_adapter_folder(folder, "hf", source.family, source.config, source.head, source.adapter_name, params)
        return
    folder.mkdir(parents=True, exist_ok=True)
    save_arrays(folder / WEIGHTS_FILE, params, metadata={"format": "pt"})  # transformers checks the format tag
    classes = format_rules(source.family, "hf", source.config).classes
    config = {**source.config.to_dict(), **family_marker(source.family)}
    if task is not None:
        config[FINETUNING_TASK] = task
    if source.head in classes:
        config["architectures"] = [classes[source.head]]
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder))
