"""BERT in transformers PyTorch (canonical), transformers TF (h5), PaddleNLP and Google's TF1 checkpoints.

The body rows for PaddleNLP and Keras live with the family (`backends/bert/weights.py`); here are the
head rows, the TF1 names and what each ecosystem calls its classes.
"""
from backends.bert.weights import CHECKPOINT_RULES, WEIGHTS
from backends.weights import Rule, RuleSet, SAME_NAMES

from . import FormatRules, dense, head_classes, norm

CLASSES = head_classes("bert", "transformers")
LM_HEADS = ("mlm", "pretraining")
# a language-model head's tied copies (transformers' state_dict and PaddleNLP's files list the decoder apart)
TIED = {head: WEIGHTS.tied_aliases for head in LM_HEADS}
POOLER = r"(bert\.)?pooler\.dense\.(weight|bias)"
# transformers builds the pooler in BertModel only (its other heads use add_pooling_layer=False); PaddleNLP in all
TRANSFORMERS_BUILDS = {"base": POOLER}
# transformers' Keras heads: Dense `classifier` / `qa_outputs`, the MLM head inside layer "mlm___cls", the
# next-sentence head inside "nsp___cls"
KERAS_HEADS = [
    *dense(r"classifier", "classifier", ":0"), *dense(r"qa_outputs", "qa_outputs", ":0"),
    Rule(r"cls\.predictions\.bias", "mlm___cls/predictions/bias:0"),
    *dense(r"cls\.predictions\.transform\.dense", "mlm___cls/predictions/transform/dense", ":0"),
    *norm(r"cls\.predictions\.transform\.LayerNorm", "mlm___cls/predictions/transform/LayerNorm", ":0"),
    *dense(r"cls\.seq_relationship", "nsp___cls/seq_relationship", ":0"),
]


def tf1_rules() -> RuleSet:
    """Canonical -> Google's TF1 variable names (`bert/encoder/layer_3/...`, kernels [in, out])."""
    b, layer, to = r"(?:bert\.)?", r"(?:bert\.)?encoder\.layer\.(?P<i>\d+)\.", r"bert/encoder/layer_\g<i>/"
    return RuleSet([
        Rule(b + r"embeddings\.(?P<t>word|position|token_type)_embeddings\.weight",
             r"bert/embeddings/\g<t>_embeddings"),
        *norm(b + r"embeddings\.LayerNorm", "bert/embeddings/LayerNorm"),
        *dense(layer + r"attention\.self\.(?P<m>query|key|value)", to + r"attention/self/\g<m>"),
        *dense(layer + r"attention\.output\.dense", to + "attention/output/dense"),
        *dense(layer + r"(?P<m>intermediate|output)\.dense", to + r"\g<m>/dense"),
        *norm(layer + r"attention\.output\.LayerNorm", to + "attention/output/LayerNorm"),
        *norm(layer + r"output\.LayerNorm", to + "output/LayerNorm"),
        *dense(b + r"pooler\.dense", "bert/pooler/dense"),
        Rule(r"cls\.predictions\.bias", "cls/predictions/output_bias"),
        *dense(r"cls\.predictions\.transform\.dense", "cls/predictions/transform/dense"),
        *norm(r"cls\.predictions\.transform\.LayerNorm", "cls/predictions/transform/LayerNorm"),
        # the next-sentence classifier is a bare [2, hidden] matrix (torch's layout), not a Dense
        Rule(r"cls\.seq_relationship\.weight", "cls/seq_relationship/output_weights"),
        Rule(r"cls\.seq_relationship\.bias", "cls/seq_relationship/output_bias"),
    ], "bert Google TF1 checkpoint")


FORMATS = {
    "hf": FormatRules(RuleSet([SAME_NAMES], "bert transformers"), CLASSES, WEIGHTS.buffers,
                      builds=TRANSFORMERS_BUILDS, tied=TIED),
    # the MLM head holds the tied input embeddings, so Keras lists them under its layer too; transformers' TF
    # classes always tie the decoder (an untied one has no place: a clear error)
    "tf": FormatRules(RuleSet(KERAS_HEADS + list(CHECKPOINT_RULES["keras"].rules), "bert transformers-tf"),
                      CLASSES, shared={"mlm___cls": r"bert/embeddings/.*"}, builds=TRANSFORMERS_BUILDS),
    # PaddleNLP's pre-training class is BertForPretraining; its LM head stores the tied decoder and its bias twice
    "paddle": FormatRules(CHECKPOINT_RULES["paddlenlp"], head_classes("bert", "paddlenlp"),
                          config={"pool_act": "tanh", "fuse": False}, builds={h: POOLER for h in CLASSES}, tied=TIED,
                          writes_tied=True),
    # Google's pre-training checkpoints (MLM and next-sentence heads); optimizer slots and step are not parameters
    "tf1bert": FormatRules(tf1_rules(), {head: CLASSES[head] for head in ("base", "mlm", "pretraining")},
                           (r".*/adam_[mv]", r"global_step")),
}
