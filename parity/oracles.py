"""Third-party oracles: the same weights and inputs through transformers' and PaddleNLP's classes.

An oracle runs in its own worker process like a backend (job "backend" is the oracle's name) and
yields the outputs it exposes under our names; there is no gradient, and it runs in float32
(transformers' Funnel computes attention scores in float32 even in float64, so float64 proves
nothing there).

transformers: the PyTorch class of every head of funnel, bert and roberta (TRANSFORMERS_CLASSES),
loaded strictly with our canonical weights (transformers' names).

paddlenlp (PaddleNLP 2.8.1): the class the converters write for the head (backends/checkpoints/rules/<family>.py,
format "paddle"), loaded with our weights through the same rules (PaddleNLP names, paddle's [in, out]
Linear layout), every key accounted for:
- bert and roberta: BertModel/RobertaModel (hidden states, attentions, pooler) and the
  ...ForSequenceClassification, ...ForQuestionAnswering, ...ForMultipleChoice and
  ...ForTokenClassification heads. Not the MLM head: PaddleNLP's ties and lays out its decoder
  differently (no converter rule either).
- funnel: FunnelModel and FunnelBaseModel (hidden states, attentions) and the sequence
  classification, question answering and multiple choice heads, which return their logits only.
  PaddleNLP's Funnel computes something else for attention_type "factorized" (its stride_pool gets a
  tuple), separate_cls=False and truncate_seq=False (shape errors): such configs are refused.
- PaddleNLP's embeddings (paddle's `nn.Embedding(padding_idx=...)`) return zeros for the padding id
  whatever its row holds, where transformers and our ports read the row; seeded parity weights have
  a non-zero row there, so the oracle turns that zeroing off (`_padding_idx = None`) and the class
  computes with exactly our weights. (A PaddleNLP checkpoint's own padding rows are zero: the same.)
- tinybert and bilstm have no oracle: transformers has no TinyBERT, PaddleNLP's TinyBERT returns
  other outputs than ours (its distillation hooks), and neither has the BiLSTM student.
- deformer: no library has the DeFormer; at split 0/0/N it is its base family's model on the concatenation
  [question; passage] with its positions (backends/deformer/weights.py `joint_inputs`), so transformers' class of
  the base family (BertForQuestionAnswering, RobertaForMultipleChoice, ...) runs those inputs. Other splits have
  no oracle.
"""
from __future__ import annotations

import re

import numpy as np

from backends import FAMILIES, family

# family -> head -> transformers class name (the families' head registries, backends/<family>/heads.py)
TRANSFORMERS_CLASSES = {name: classes for name in FAMILIES
                        if (classes := {head: spec.transformers for head, spec in family(name).head_registry.items()
                                        if spec.transformers})}
ORACLES = {"transformers": "transformers (PyTorch classes)", "paddlenlp": "PaddleNLP 2.8.1 (paddle classes)"}
# families whose transformers class the `adapters` library (1.3) adds adapters to: the oracle of a model with
# an adapter (config field `adapter`) is that class with the library's adapter
ADAPTERS_FAMILIES = ("bert", "roberta")
PADDLENLP_FAMILIES = ("bert", "roberta", "funnel")
# Funnel switches PaddleNLP computes differently: key -> the only value it handles
PADDLENLP_FUNNEL_SWITCHES = {"attention_type": "relative_shift", "separate_cls": True, "truncate_seq": True}
# PaddleNLP's BERT heads hold a pooler that only the base model's outputs read (ours and transformers'
# QA and token classification heads have none): it keeps PaddleNLP's initial values
PADDLENLP_UNREAD = {"bert": r"bert\.pooler\.dense\.(weight|bias)"}
# our output names -> transformers' (and PaddleNLP's) output attribute names
OUTPUT_NAMES = {"last_hidden_state": "last_hidden_state", "pooler_output": "pooler_output", "logits": "logits",
                "start_logits": "start_logits", "end_logits": "end_logits", "prediction_logits": "prediction_logits",
                "seq_relationship_logits": "seq_relationship_logits", "hidden_states": "hidden_states",
                "attentions": "attentions"}
# heads whose language-model decoder PaddleNLP lays out and ties its own way (its BERT LM head also fixes
# LayerNorm epsilon at 1e-5): the converters write what those classes load, the oracle does not run them
PADDLENLP_DECODER_HEADS = ("mlm", "pretraining")


def unsupported(oracle: str, family_name: str, config, head: str) -> str | None:
    """Why `oracle` cannot run this family, head and config (None: it can); checked before any run."""
    if oracle == "transformers":
        if head not in TRANSFORMERS_CLASSES.get(family_name, {}):
            return f"transformers has no class for {family_name} head {head}"
        if family_name == "deformer" and config.passage_layers:
            return (f"transformers has no DeFormer: no oracle for split {config.split} (only 0/0/N is the base "
                    "model on the concatenation)")
        if getattr(config, "adapter", None) is not None:
            if family_name not in ADAPTERS_FAMILIES:
                return f"the adapters library has no {family_name} (only {', '.join(ADAPTERS_FAMILIES)})"
            if not _adapters_installed():
                return "the model has an adapter: the adapters library is not installed (.ci/install-dev)"
        return None
    if getattr(config, "adapter", None) is not None:
        return "PaddleNLP has no bottleneck adapters of the adapters library's kind"
    if family_name not in PADDLENLP_FAMILIES:
        return f"PaddleNLP has no class computing our {family_name} outputs (oracles: {', '.join(PADDLENLP_FAMILIES)})"
    from backends.checkpoints.rules import format_rules

    if head in PADDLENLP_DECODER_HEADS:
        return f"PaddleNLP's {family_name} {head} head lays out and ties its decoder its own way"
    if head not in format_rules(family_name, "paddle").classes:
        return f"PaddleNLP's {family_name} {head} head has another layout than ours (no converter rule)"
    if family_name == "funnel":
        for key, value in PADDLENLP_FUNNEL_SWITCHES.items():
            if getattr(config, key) != value:
                return f"PaddleNLP's Funnel computes {key}={getattr(config, key)!r} differently (only {value!r})"
    return None


def run_transformers(family_name: str, config, head: str, params, inputs: dict, dtype: str) -> dict:
    """Outputs of transformers' PyTorch class for `head`, loaded with our canonical weights (strict)."""
    import torch
    import transformers

    from backends.run import flatten_outputs

    problem = unsupported("transformers", family_name, config, head)
    if problem:
        raise KeyError(problem)
    class_name = TRANSFORMERS_CLASSES[family_name][head]
    if family_name == "deformer":  # at 0/0/N: the base family's class on the concatenation (module docstring)
        from backends.deformer.heads import base_class
        from backends.deformer.weights import joint_inputs

        class_name, inputs = base_class(config, head), joint_inputs(config, inputs)
    hf_config = transformers.AutoConfig.for_model(**config.to_dict())
    model = getattr(transformers, class_name)(hf_config)
    add_library_adapter(model, config)
    model = model.eval().to(getattr(torch, dtype))
    state = {name: torch.from_numpy(np.asarray(params[name], dtype=dtype)) for name in params}
    missing, unexpected = model.load_state_dict(state, strict=False)
    # a tied weight (the MLM decoder is the word embedding) is one of ours but two of transformers' keys
    current = model.state_dict()
    loaded = {current[name].data_ptr() for name in state if name in current}
    untied = [name for name in missing if current[name].data_ptr() not in loaded]
    if untied or unexpected:
        raise KeyError(f"transformers {class_name}: missing {untied}, unexpected {unexpected}")
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in inputs.items()},
                    output_hidden_states=True,
                    output_attentions=True)
    found = {ours: getattr(out, theirs) for ours, theirs in OUTPUT_NAMES.items() if getattr(out, theirs, None) is not None}
    return {name: t.numpy() for name, t in flatten_outputs(found).items()}


def _adapters_installed() -> bool:
    import importlib.util
    import sys

    # the library is a lazy module: once imported its __spec__ is None, which find_spec refuses
    return "adapters" in sys.modules or importlib.util.find_spec("adapters") is not None


def add_library_adapter(model, config) -> None:
    """The adapter `config.adapter` names, added to a transformers model by the `adapters` library
    (`adapters.init`, `add_adapter`, active), under our parameter names (backends/adapters)."""
    from backends.adapters import DEFAULT_NAME, config_of

    adapter = config_of(config)
    if adapter is None:
        return
    import adapters

    adapters.init(model)
    model.add_adapter(DEFAULT_NAME, config=adapter.to_dict())
    model.set_active_adapters(DEFAULT_NAME)


def paddlenlp_model(family_name: str, config, head: str, params, dtype: str, num_choices: int | None = None):
    """PaddleNLP's class for `head` holding our canonical weights (through the converters' PaddleNLP rules; every
    key of the model loaded, none left over), in train mode; also bench/train_throughput.py's PaddleNLP anchor."""
    import importlib
    import os

    # datasets (imported by PaddleNLP) must not import torch or tensorflow beside paddle
    os.environ.update(USE_TF="0", USE_TORCH="0")
    import paddle

    from backends import framework
    from backends.checkpoints.rules import format_rules

    problem = unsupported("paddlenlp", family_name, config, head)
    if problem:
        raise KeyError(problem)
    rules = format_rules(family_name, "paddle")
    module = importlib.import_module(f"paddlenlp.transformers.{family_name}.modeling")
    model_class = getattr(module, rules.classes[head])
    framework("paddle").set_default_dtype(dtype)
    fields = {k: v for k, v in {**config.to_dict(), **rules.config}.items() if k != "model_type"}
    if num_choices is not None:
        fields["num_choices"] = num_choices
    model = model_class(model_class.config_class(**fields))
    state = dict(rules.rules.to_target(name, np.asarray(params[name], dtype=dtype)) for name in params)
    own = set(model.state_dict())
    missing = {key for key in own - set(state) if not re.fullmatch(PADDLENLP_UNREAD.get(family_name, "$^"), key)
               or "pooler_output" in family(family_name).final_outputs[head]}
    if missing or set(state) - own:
        raise KeyError(f"PaddleNLP {model_class.__name__}: missing {sorted(missing)[:5]}, "
                       f"unexpected {sorted(set(state) - own)[:5]}")
    model.set_state_dict(state)
    # paddle's Embedding(padding_idx=i) outputs zeros for id i whatever row i holds; transformers and our
    # ports read the row: switched off, the class computes with our weights (see the module docstring)
    for layer in model.sublayers():
        if isinstance(layer, paddle.nn.Embedding):
            layer._padding_idx = None
    return model


def run_paddlenlp(family_name: str, config, head: str, params, inputs: dict, dtype: str) -> dict:
    """Outputs of PaddleNLP's class for `head`, loaded with our canonical weights through the converters'
    PaddleNLP rules (every key of the model loaded, none left over)."""
    import paddle

    from backends.run import flatten_outputs

    num_choices = inputs["input_ids"].shape[1] if head in family(family_name).choice_heads else None
    model = paddlenlp_model(family_name, config, head, params, dtype, num_choices)
    model.eval()
    with paddle.no_grad():
        out = model(**{k: paddle.to_tensor(v) for k, v in inputs.items()}, output_hidden_states=True,
                    output_attentions=True, return_dict=True)
    if hasattr(out, "keys"):
        found = {ours: out[theirs] for ours, theirs in OUTPUT_NAMES.items()
                 if theirs in out.keys() and out[theirs] is not None}
    else:  # Funnel's heads return their logits alone, in the order of our final outputs
        found = dict(zip(family(family_name).final_outputs[head], out if isinstance(out, (tuple, list)) else [out]))
    return {name: t.numpy() for name, t in flatten_outputs(found).items()}


RUNNERS = {"transformers": run_transformers, "paddlenlp": run_paddlenlp}
