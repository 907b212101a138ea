"""TinyBERT (no transformers class: canonical names are PaddleNLP's) in our safetensors layout, a
transformers-style TF h5 (read by our TF port) and PaddleNLP checkpoints."""
from backends.bert.weights import keras_rules
from backends.tinybert.weights import CHECKPOINT_RULES, WEIGHTS
from backends.weights import RuleSet, SAME_NAMES

from . import FormatRules, dense, head_classes
from .bert import KERAS_HEADS

CLASSES = head_classes("tinybert", "transformers")  # our port class names (transformers has none)
KERAS = [*dense(r"(?:tinybert\.)?fit_dense", "tinybert/fit_dense", ":0"),
         *dense(r"(?:tinybert\.)?fit_denses\.(\d+)", r"tinybert/fit_denses_._\1", ":0"), *KERAS_HEADS,
         *keras_rules("tinybert", "tinybert").rules]

POOLER = r"(tinybert\.)?pooler\.dense\.(weight|bias)"
# our ports build the pooler in every head; PaddleNLP's TinyBertModel builds it and the per-layer `fit_denses`
# (General TinyBERT's students), which our ports do not use: carried along
PORT_BUILDS = {head: POOLER for head in CLASSES}
PADDLENLP_BUILDS = {head: rf"{POOLER}|(tinybert\.)?fit_denses\.\d+\.(weight|bias)" for head in CLASSES}

FORMATS = {
    "hf": FormatRules(RuleSet([SAME_NAMES], "tinybert safetensors"), CLASSES, WEIGHTS.buffers, builds=PORT_BUILDS),
    "tf": FormatRules(RuleSet(KERAS, "tinybert keras"), CLASSES, builds=PORT_BUILDS),
    "paddle": FormatRules(CHECKPOINT_RULES["paddlenlp"], head_classes("tinybert", "paddlenlp"), config={"pool_act": "tanh"},
                          builds=PADDLENLP_BUILDS),
}
