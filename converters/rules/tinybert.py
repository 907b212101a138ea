"""TinyBERT (no transformers class: canonical names are PaddleNLP's) in our safetensors layout, a
transformers-style TF h5 (read by our TF port) and PaddleNLP checkpoints."""
from backends.bert.weights import keras_rules
from backends.tinybert.weights import CHECKPOINT_RULES, PADDLENLP_UNUSED, WEIGHTS
from backends.weights import RuleSet, SAME_NAMES

from . import FormatRules, dense, head_classes
from .bert import KERAS_HEADS

CLASSES = head_classes("tinybert", "transformers")  # our port class names
KERAS = [*dense(r"(?:tinybert\.)?fit_dense", "tinybert/fit_dense", ":0"), *KERAS_HEADS,
         *keras_rules("tinybert", "tinybert").rules]

FORMATS = {
    "hf": FormatRules(RuleSet([SAME_NAMES], "tinybert safetensors"), CLASSES, WEIGHTS.buffers),
    "tf": FormatRules(RuleSet(KERAS, "tinybert keras"), CLASSES),
    # PaddleNLP's per-layer `fit_denses` (TinyBERT v2 students) are not modeled: skipped on reading
    "paddle": FormatRules(CHECKPOINT_RULES["paddlenlp"], head_classes("tinybert", "paddlenlp"), PADDLENLP_UNUSED,
                          config={"pool_act": "tanh"}),
}
