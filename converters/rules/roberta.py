"""RoBERTa in transformers PyTorch (canonical), transformers TF (h5) and PaddleNLP checkpoints."""
import re

from backends.roberta.weights import CHECKPOINT_RULES, WEIGHTS
from backends.weights import Rule, RuleSet, SAME_NAMES

from . import FormatRules, dense, head_classes, norm

CLASSES = head_classes("roberta", "transformers")
HF_IGNORE = (*WEIGHTS.buffers, *map(re.escape, WEIGHTS.tied_aliases))
# transformers' Keras heads: `classifier` (a Dense, or dense + out_proj for sequence classification),
# `qa_outputs`, and `lm_head`
KERAS_HEADS = [
    *dense(r"classifier\.(?P<m>dense|out_proj)", r"classifier/\g<m>", ":0"),
    *dense(r"classifier", "classifier", ":0"), *dense(r"qa_outputs", "qa_outputs", ":0"),
    Rule(r"lm_head\.bias", "lm_head/bias:0"), *dense(r"lm_head\.dense", "lm_head/dense", ":0"),
    *norm(r"lm_head\.layer_norm", "lm_head/layer_norm", ":0"),
]

FORMATS = {
    "hf": FormatRules(RuleSet([SAME_NAMES], "roberta transformers"), CLASSES, HF_IGNORE),
    # the LM head holds the tied input embeddings, so Keras lists them under its layer too
    "tf": FormatRules(RuleSet(KERAS_HEADS + list(CHECKPOINT_RULES["keras"].rules), "roberta transformers-tf"),
                      CLASSES, shared={"lm_head": r"roberta/embeddings/.*"}),
    # PaddleNLP's MLM head ties its decoder differently: not converted (heads.py)
    "paddle": FormatRules(CHECKPOINT_RULES["paddlenlp"], head_classes("roberta", "paddlenlp")),
}
