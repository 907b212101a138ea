"""What every model family declares, framework-free: config class, presets, heads, weights, inputs.

A family's `__init__.py` builds its `SPEC` with `family_spec(...)` from its config class, presets, head
registry (`heads.py`: `Head` per head name) and weights module (names, shapes, init, inputs).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from .weights import RuleSet

# axes an input may have; "choices" is the multiple-choice axis of a head with `choices`
INPUT_AXES = ("batch", "choices", "seq")
# what the task layer tokenises for an input: both texts of a pair together ("joint": [CLS] a [SEP] b [SEP]),
# or one text alone (a two-tower model such as the siamese BiLSTM encodes each sentence on its own)
INPUT_TEXTS = ("joint", "a", "b")
# the final outputs tasks decode
PREDICTION_OUTPUTS = ("logits", "start_logits", "end_logits")
# heads whose final outputs have no sequence axis (one row of logits per example, or per choice)
ROW_OUTPUT_HEADS = ("seqcls", "mc")


@dataclass(frozen=True)
class InputSpec:
    """One model input: its forward() argument name, numpy dtype, axes, and what fills it.

    `feature` is the tokenizer output it holds (input_ids, attention_mask or token_type_ids) and
    `text` the text it is computed from (INPUT_TEXTS).
    """

    name: str
    dtype: str
    axes: tuple[str, ...]
    feature: str
    text: str = "joint"

    def __post_init__(self):
        if not set(self.axes) <= set(INPUT_AXES) or self.text not in INPUT_TEXTS:
            raise ValueError(f"input {self.name}: axes {self.axes} must be among {INPUT_AXES}, "
                             f"text {self.text!r} one of {INPUT_TEXTS}")

    def shape(self, sizes: Mapping[str, int]) -> tuple[int, ...]:
        """The array shape for axis sizes, e.g. {"batch": 2, "seq": 7}."""
        return tuple(sizes[axis] for axis in self.axes)


def token_inputs(*features: str, choices: bool = False, text: str = "joint", prefix: str = "",
                 suffix: str = "") -> tuple:
    """int64 InputSpecs named `prefix + feature + suffix`, [batch, (choices,) seq], holding tokenizer feature
    `feature` of `text`."""
    axes = ("batch", "choices", "seq") if choices else ("batch", "seq")
    return tuple(InputSpec(prefix + feature + suffix, "int64", axes, feature, text) for feature in features)


@dataclass(frozen=True)
class Head:
    """One head of a family: its class in each ecosystem, its final outputs and its input layout."""

    # the class every port (modeling_<fw>.py) defines for it; the ports' HEADS map the head to it
    port_class: str
    # the final outputs (the parity loss is built from them; tasks decode logits / start and end logits)
    outputs: tuple[str, ...]
    # transformers' PyTorch class (the parity oracle; the converters' "hf" and "tf" architectures); None: none
    transformers: str | None = None
    # PaddleNLP's class (the converters' "paddle" architecture); None: the paddle converter does not write it
    paddlenlp: str | None = None
    # inputs carry a choices axis: [batch, choices, seq]
    choices: bool = False


def port_heads(registry: Mapping[str, Head], namespace: Mapping[str, type]) -> dict:
    """A port's HEADS: head name -> the class `namespace` (the port module's globals()) defines for it."""
    return {name: namespace[head.port_class] for name, head in registry.items()}


@dataclass(frozen=True)
class Preset:
    """A named model shape: the family, its config and the head the preset's checkpoints use."""

    name: str
    family: str
    config: object
    head: str
    description: str = ""


class HeadTable:
    """The head names a `head_registry` (head name -> Head) declares; FamilySpec and the weights tables share it."""

    head_registry: Mapping[str, Head]

    @property
    def heads(self) -> tuple[str, ...]:
        return tuple(self.head_registry)

    @property
    def choice_heads(self) -> tuple[str, ...]:
        """Heads whose inputs carry a choices axis: [batch, choices, seq]."""
        return tuple(name for name, head in self.head_registry.items() if head.choices)


@dataclass(frozen=True)
class FamilySpec(HeadTable):
    """Everything the harness, converters and tasks need to know about a family without a framework."""

    name: str
    config_class: type
    presets: Mapping[str, Preset]
    # head name -> Head (backends/<family>/heads.py)
    head_registry: Mapping[str, Head]
    # canonical parameter name -> shape, for a config and head
    param_shapes: Callable[[object, str], dict]
    # numpy initialisation (the family's published init), identical for every framework
    init_params: Callable[[object, str, np.random.Generator], dict]
    # framework -> RuleSet from canonical names/layouts to that port's names/layouts
    port_rules: Mapping[str, RuleSet]
    # the inputs a config and head take (InputSpec tuple, in forward() order); tasks build, batch and feed these
    model_inputs: Callable[[object, str], tuple]
    # seeded numpy inputs for a config, head, batch and sequence length: exactly model_inputs(config, head)
    make_inputs: Callable[[object, str, int, int, np.random.Generator], dict]
    # readable names of the hidden states a head exposes, in order (for reports)
    hidden_state_names: Callable[[object, str], list]
    # a tiny config with the same switches as the given one (tests and quick parity runs)
    shrink: Callable[[object], object]
    # canonical name -> shape of the parameters a checkpoint of a head may hold or lack (a pooler the head
    # does not use, a part only another ecosystem's class builds); param_shapes lists the port's own
    optional_shapes: Callable[[object, str], dict] = field(default=lambda config, head: {})  # none
    # a row's outputs do not depend on trailing padding positions (attention masks them, positions count from each
    # text's start, recurrences stop at the last token), so a prediction may drop the positions every row of a batch
    # pads; False where they do (Funnel pools pairs of positions, padded ones included)
    trailing_padding_free: bool = False
    # a training step does not depend on trailing padding either: no dropout mask, loss or gradient has the padded
    # width in its shape or its sum (a recurrence whose only dropout acts on the sentence vector), so the driver may
    # train on batches cut like predictions' (BERT-like families are not: their dropout masks span the sequence)
    trains_trimmed: bool = False

    @property
    def final_outputs(self) -> dict:
        """head -> names of the final outputs (the ones the parity loss is built from)."""
        return {name: head.outputs for name, head in self.head_registry.items()}

    def input_names(self, config, head: str) -> tuple[str, ...]:
        """The names of the inputs the family declares for `config` and `head`: what the task layer builds,
        the training driver batches and a Runner feeds to forward()."""
        return tuple(spec.name for spec in self.model_inputs(config, head))

    def padding_trimmer(self, config, head: str, multiple: int = 1) -> Callable[[dict], dict] | None:
        """For a head with per-row outputs (ROW_OUTPUT_HEADS) of a trailing-padding-free family: a function that cuts
        a batch's sequence axis, per text, after the last position any row's attention mask uses (what transformers'
        DataCollatorWithPadding pads to), that width rounded up to a `multiple` of positions (at most the batch's
        own: DataCollatorWithPadding's pad_to_multiple_of); None where that could change the outputs."""
        if not self.trailing_padding_free or head not in ROW_OUTPUT_HEADS:
            return None
        specs = {spec.name: spec for spec in self.model_inputs(config, head)}
        masks = {spec.text: spec.name for spec in specs.values() if spec.feature == "attention_mask"}
        if any(spec.axes[-1] != "seq" or spec.text not in masks for spec in specs.values()):
            return None

        def trim(batch: dict) -> dict:
            widths = {}
            for text, name in masks.items():
                used = np.asarray(batch[name]).reshape(-1, batch[name].shape[-1]).any(axis=0)
                width = int(np.flatnonzero(used)[-1]) + 1 if used.any() else 1
                widths[text] = -(-width // multiple) * multiple  # a slice past the end stops there
            return {name: value[..., :widths[specs[name].text]] if name in specs else value
                    for name, value in batch.items()}
        return trim

    def training_trimmer(self, config, head: str) -> Callable[[dict], dict] | None:
        """padding_trimmer for training batches, where the family declares the step unchanged by it; else None."""
        return self.padding_trimmer(config, head) if self.trains_trimmed else None

    def prediction_outputs(self, head: str) -> tuple[str, ...]:
        """The final outputs of `head` that a task decodes (a head may have more, e.g. TinyBERT's
        fit_hidden_states)."""
        return tuple(name for name in self.final_outputs[head] if name in PREDICTION_OUTPUTS)


def family_spec(name: str, config_class: type, presets: Mapping[str, Preset], head_registry: Mapping[str, Head],
                weights, port_rules: Mapping[str, RuleSet], trailing_padding_free: bool = False,
                trains_trimmed: bool = False) -> FamilySpec:
    """A family's FamilySpec: `weights` (its weights module, or a `BertWeights`-like object) provides
    param_shapes, init_params, model_inputs, make_inputs, hidden_state_names and shrink."""
    param_shapes, init_params = with_adapters(weights.param_shapes, weights.init_params)
    return FamilySpec(
        name=name,
        config_class=config_class,
        presets=presets,
        head_registry=head_registry,
        param_shapes=param_shapes,
        init_params=init_params,
        port_rules=port_rules,
        model_inputs=weights.model_inputs,
        make_inputs=weights.make_inputs,
        hidden_state_names=weights.hidden_state_names,
        shrink=weights.shrink,
        trailing_padding_free=trailing_padding_free,
        trains_trimmed=trains_trimmed,
        **({"optional_shapes": weights.optional_shapes} if hasattr(weights, "optional_shapes") else {}),
    )


def with_adapters(param_shapes: Callable, init_params: Callable) -> tuple[Callable, Callable]:
    """A family's param_shapes and init_params extended by the adapter its config asks for (config field
    `adapter`, backends/adapters): its parameters follow the base model's, and their init is drawn after
    the base model's from the same generator. A config without an adapter gets exactly the family's own."""

    def adapter_shapes(config, head):
        from .adapters import config_of, shapes_from_base

        adapter = config_of(config)
        return adapter, ({} if adapter is None else shapes_from_base(param_shapes(config, head), adapter))

    def all_shapes(config, head: str) -> dict:
        return {**param_shapes(config, head), **adapter_shapes(config, head)[1]}

    def all_init(config, head: str, rng: np.random.Generator) -> dict:
        from .adapters import init_from_shapes

        params = init_params(config, head, rng)
        adapter, shapes = adapter_shapes(config, head)
        return params if adapter is None else {**params, **init_from_shapes(shapes, adapter, rng)}

    return all_shapes, all_init
