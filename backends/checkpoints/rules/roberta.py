"""RoBERTa in transformers PyTorch (canonical), transformers TF (h5) and PaddleNLP checkpoints."""
from backends.roberta.weights import CHECKPOINT_RULES, WEIGHTS
from backends.weights import Rule, RuleSet, SAME_NAMES

from . import FormatRules, dense, head_classes, norm

CLASSES = head_classes("roberta", "transformers")
TIED = {"mlm": WEIGHTS.tied_aliases}  # the LM head's tied decoder and bias, listed apart by transformers and PaddleNLP
POOLER = r"(roberta\.)?pooler\.dense\.(weight|bias)"
BUILDS = {"base": POOLER}  # transformers' and PaddleNLP's heads use add_pooling_layer=False (mc uses the pooler)
# transformers' Keras heads: `classifier` (a Dense, or dense + out_proj for sequence classification),
# `qa_outputs`, and `lm_head`
KERAS_HEADS = [
    *dense(r"classifier\.(?P<m>dense|out_proj)", r"classifier/\g<m>", ":0"),
    *dense(r"classifier", "classifier", ":0"), *dense(r"qa_outputs", "qa_outputs", ":0"),
    Rule(r"lm_head\.bias", "lm_head/bias:0"), *dense(r"lm_head\.dense", "lm_head/dense", ":0"),
    *norm(r"lm_head\.layer_norm", "lm_head/layer_norm", ":0"),
]

FORMATS = {
    "hf": FormatRules(RuleSet([SAME_NAMES], "roberta transformers"), CLASSES, WEIGHTS.buffers, builds=BUILDS,
                      tied=TIED),
    # the LM head holds the tied input embeddings, so Keras lists them under its layer too
    "tf": FormatRules(RuleSet(KERAS_HEADS + list(CHECKPOINT_RULES["keras"].rules), "roberta transformers-tf"),
                      CLASSES, shared={"lm_head": r"roberta/embeddings/.*"}, builds=BUILDS),
    "paddle": FormatRules(CHECKPOINT_RULES["paddlenlp"], head_classes("roberta", "paddlenlp"), builds=BUILDS, tied=TIED,
                          writes_tied=True),
}
