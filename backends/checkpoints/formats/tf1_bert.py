"""Google's original TF1 BERT checkpoints: bert_model.ckpt.{index,data-*} + bert_config.json + vocab.txt.

Variables are named `bert/encoder/layer_3/attention/self/query/kernel` (kernels [in, out]); the rules
map canonical names to these. Read only, through TensorFlow's checkpoint reader, one variable at a time.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from backends.errors import WeightsError

from . import Source, TensorRef, read_json

TITLE = "Google TF1 BERT"
FRAMEWORK = "tf"
CONFIG = "bert_config.json"
CHECKPOINT = "bert_model.ckpt"


def read(path: Path) -> Source:
    import tensorflow as tf

    config = {"model_type": "bert", **read_json(path / CONFIG)}
    prefix = path / CHECKPOINT
    if not prefix.with_name(prefix.name + ".index").is_file():
        found = sorted(path.glob("*.ckpt*.index"))
        if not found:
            raise WeightsError(f"{path}: no TF1 checkpoint ({CHECKPOINT}.index and .data-*)")
        prefix = found[0].with_suffix("")
    try:
        reader = tf.train.load_checkpoint(str(prefix))
        shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
    except Exception as exc:  # TensorFlow raises DataLossError, NotFoundError, ... for bad checkpoints
        raise WeightsError(f"{prefix}: not a readable TF checkpoint ({str(exc).splitlines()[0]})") from None

    def load(name):
        try:
            return np.asarray(reader.get_tensor(name))
        except Exception as exc:
            raise WeightsError(f"{prefix}: cannot read {name} ({str(exc).splitlines()[0]})") from None

    tensors = {name: TensorRef(tuple(shape), np.dtype(dtypes[name].as_numpy_dtype),
                                         lambda name=name: load(name)) for name, shape in shapes.items()}
    # TensorFlow's checkpoint reader (a BundleReader) is not documented as safe from several threads at once
    return Source(path, config, path / CONFIG, tensors, prefix.with_name(prefix.name + ".index"),
                  concurrent_loads=False)
