"""What the tests run in worker processes, one framework per process (`conftest.workers`): third-party
models (transformers PyTorch and TF, PaddleNLP) and our ports on converted checkpoints, and writers of
framework files. Each model returns numpy outputs under transformers' field names, and the loader's own
verdict on missing and unexpected keys. Workers import this module only, never a test module (whose
conftest imports every framework).
"""
from __future__ import annotations

import importlib
import inspect
import os

import numpy as np

from backends import import_framework

FIELDS = ("last_hidden_state", "pooler_output", "logits", "start_logits", "end_logits", "prediction_logits",
          "seq_relationship_logits")


def import_first(fw: str) -> None:
    """A worker imports its framework before anything else (Paddle crashes when TensorFlow came first),
    and keeps transformers and datasets from importing the others."""
    os.environ.update(USE_TF="1" if fw == "tf" else "0", USE_TORCH="1" if fw == "torch" else "0", USE_FLAX="0")
    import_framework(fw)


def _outputs(out, to_numpy, names=()) -> dict:
    """Named outputs of a model output: a ModelOutput, or (PaddleNLP) a tensor or tuple in `names` order."""
    if hasattr(out, "keys"):
        return {name: to_numpy(out[name]) for name in FIELDS if name in out.keys() and out[name] is not None}
    return {name: to_numpy(t) for name, t in zip(names, out if isinstance(out, (tuple, list)) else [out])}


def transformers_torch(directory: str, class_name: str, inputs: dict) -> tuple[dict, dict]:
    import torch
    import transformers

    model, info = getattr(transformers, class_name).from_pretrained(directory, output_loading_info=True)
    with torch.no_grad():
        out = model.eval()(**{k: torch.from_numpy(v) for k, v in inputs.items()})
    return _outputs(out, lambda t: t.numpy()), {k: sorted(v) for k, v in info.items() if k != "error_msgs"}


def transformers_tf(directory: str, class_name: str, inputs: dict) -> tuple[dict, dict]:
    import transformers

    model, info = getattr(transformers, "TF" + class_name).from_pretrained(directory, output_loading_info=True)
    out = model(**inputs, training=False)
    return _outputs(out, lambda t: t.numpy()), {k: sorted(map(str, v)) for k, v in info.items()}


def paddlenlp(directory: str, class_name: str, inputs: dict, names=()) -> tuple[dict, dict]:
    """PaddleNLP has no loading info: its `_load_pretrained_model` verdict is recorded. Some heads return
    bare tensors or tuples (`names` names them); multiple-choice heads need num_choices."""
    import paddle
    import paddlenlp.transformers as transformers
    from paddlenlp.transformers.model_utils import PretrainedModel

    cls = getattr(transformers, class_name, None) or _paddlenlp_class(class_name)
    info = {}
    original = PretrainedModel._load_pretrained_model.__func__

    def record(klass, *args, **kwargs):
        model, missing, unexpected, mismatched = original(klass, *args, **kwargs)
        info.update(missing_keys=sorted(missing), unexpected_keys=sorted(unexpected),
                    mismatched_keys=sorted(map(str, mismatched)))
        return model, missing, unexpected, mismatched

    PretrainedModel._load_pretrained_model = classmethod(record)
    try:
        choices = {"num_choices": inputs["input_ids"].shape[1]} if inputs["input_ids"].ndim == 3 else {}
        model = cls.from_pretrained(directory, **choices)
    finally:
        PretrainedModel._load_pretrained_model = classmethod(original)
    model.eval()
    kwargs = {"return_dict": True} if "return_dict" in inspect.signature(model.forward).parameters else {}
    with paddle.no_grad():
        out = model(**{k: paddle.to_tensor(v) for k, v in inputs.items()}, **kwargs)
    return _outputs(out, lambda t: t.numpy(), names), info


def _paddlenlp_class(class_name: str):
    """Classes PaddleNLP does not export at the top (e.g. FunnelBaseModel)."""
    family = class_name.split("For")[0].removesuffix("BaseModel").removesuffix("Model").lower()
    return getattr(importlib.import_module(f"paddlenlp.transformers.{family}.modeling"), class_name)


def our_port(fmt: str, directory: str, fw: str, inputs: dict, head: str | None = None) -> dict:
    """Our `fw` port holding the checkpoint at `directory` (read through the converters)."""
    from converters.core import open_checkpoint, port_outputs

    checkpoint = open_checkpoint(fmt, directory, head=head)
    family, head = checkpoint.family, checkpoint.head
    checkpoint.close()
    return port_outputs(fmt, directory, family, head, fw, inputs)


def scaled_diff(a: dict, b: dict, names=None) -> float:
    """The largest difference of outputs `names` of `b` from `a`, in units of max(1, the largest |value| of that
    output in `a`): numpy's allclose form (rtol with an absolute floor). Float32 kernels of two frameworks round
    apart by a few ulps of the largest value; an absolute bound met on logits of size ~1 failed on MLM logits of
    size ~20 by a CPU whose AVX-512 kernels round otherwise (1.0014e-5 against 1e-5, 4-5 float32 ulps there)."""
    names = names or sorted(set(a) & set(b))
    assert names, (sorted(a), sorted(b))
    return max(float(np.max(np.abs(np.asarray(a[n], np.float64) - np.asarray(b[n], np.float64))))
               / max(1.0, float(np.max(np.abs(np.asarray(a[n], np.float64))))) for n in names)


def paddle_load(path: str) -> dict:
    """A .pdparams file as paddle.load reads it."""
    import paddle

    return dict(paddle.load(path, return_numpy=True))


def torch_save(path: str, arrays: dict) -> None:
    """A pytorch_model.bin."""
    import torch

    torch.save({k: torch.from_numpy(v) for k, v in arrays.items()}, path)


def write_tf1(directory: str, variables: dict) -> None:
    """A TF1 checkpoint as google-research/bert's run_pretraining.py leaves it (tf.compat.v1 Saver)."""
    import tensorflow as tf

    tf1 = tf.compat.v1
    with tf.Graph().as_default():
        var_list = {name: tf1.Variable(value, name=f"v{i}") for i, (name, value) in enumerate(variables.items())}
        with tf1.Session() as session:
            session.run(tf1.global_variables_initializer())
            tf1.train.Saver(var_list=var_list).save(session, f"{directory}/bert_model.ckpt")


def _perturbed(name: str, array: np.ndarray, rng: np.random.Generator, pad_token_id) -> np.ndarray:
    """A library's init plus seeded noise, so zero biases and unit LayerNorm scales are not constants; the
    word-embedding padding row stays zero (PaddleNLP's padding_idx looks it up as zeros whatever it holds)."""
    array = array + 0.1 * rng.standard_normal(array.shape).astype(array.dtype)
    if "word_embeddings" in name and pad_token_id is not None:
        array[pad_token_id] = 0
    return array


def save_transformers_torch(directory: str, class_name: str, config: dict, seed: int = 0, max_shard_size=None,
                            **kwargs) -> None:
    """A checkpoint written by transformers' own PyTorch class (`save_pretrained`, sharded at `max_shard_size` if
    given), its init perturbed; `kwargs` go to the class (e.g. add_pooling_layer=False for a pooler-less export)."""
    import torch
    import transformers

    torch.manual_seed(seed)
    model = getattr(transformers, class_name)(transformers.AutoConfig.for_model(**config), **kwargs)
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():  # a tied weight is listed once
            param.copy_(torch.from_numpy(_perturbed(name, param.numpy(), rng, config.get("pad_token_id"))))
    model.save_pretrained(directory, **_shards(max_shard_size))


def save_transformers_tf(directory: str, class_name: str, config: dict, seed: int = 0, max_shard_size=None) -> None:
    """A checkpoint written by transformers' own TF class (`save_pretrained`: tf_model.h5, or its shards at
    `max_shard_size`), its init perturbed."""
    import tensorflow as tf
    import transformers

    tf.random.set_seed(seed)
    model = getattr(transformers, "TF" + class_name)(transformers.AutoConfig.for_model(**config))
    model(model.dummy_inputs, training=False)  # creates the weights
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        weight.assign(_perturbed(weight.name, weight.numpy(), rng, config.get("pad_token_id")))
    model.save_pretrained(directory, **_shards(max_shard_size))


def save_paddlenlp(directory: str, class_name: str, config: dict, seed: int = 0, max_shard_size=None) -> None:
    """A checkpoint written by PaddleNLP's own class (`save_pretrained`: model_state.pdparams, or its shards at
    `max_shard_size`), its init perturbed."""
    import paddle

    paddle.seed(seed)
    cls = _paddlenlp_class(class_name)
    model = cls(cls.config_class(**config))
    rng = np.random.default_rng(seed)
    for name, param in model.named_parameters():  # a tied weight is listed once
        param.set_value(_perturbed(name, param.numpy(), rng, config.get("pad_token_id")))
    model.save_pretrained(directory, **_shards(max_shard_size))


def _shards(max_shard_size) -> dict:
    """save_pretrained's keyword for a sharded save (each library's own default otherwise)."""
    return {} if max_shard_size is None else {"max_shard_size": max_shard_size}
