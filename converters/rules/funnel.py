"""Funnel in transformers PyTorch (canonical), transformers TF (h5) and PaddleNLP checkpoints."""
from backends.funnel.weights import LINEAR_WEIGHT
from backends.weights import Rule, RuleSet, SAME_NAMES

from . import FormatRules

CLASSES = {"model": "FunnelModel", "base": "FunnelBaseModel", "seqcls": "FunnelForSequenceClassification",
           "qa": "FunnelForQuestionAnswering", "mc": "FunnelForMultipleChoice"}
_HEAD = r"(classifier\.linear_hidden|classifier\.linear_out|qa_outputs)"
_BODY = r"(?:funnel\.)?"  # head models prefix the body with "funnel."; TF always names its main layer so

FORMATS = {
    "hf": FormatRules(RuleSet([SAME_NAMES], "funnel transformers"), CLASSES),
    # Keras Dense kernels are [in, out]; LayerNorm is gamma/beta; the body is the main layer "funnel"
    "tf": FormatRules(RuleSet([
        Rule(_HEAD + r"\.weight", r"\1.kernel", "transpose"),
        Rule(_HEAD + r"\.bias", r"\1.bias"),
        Rule(_BODY + r"(.*\.(?:q_head|k_head|v_head|post_proj|linear_1|linear_2))\.weight", r"funnel.\1.kernel",
             "transpose"),
        Rule(_BODY + r"(.*layer_norm)\.weight", r"funnel.\1.gamma"),
        Rule(_BODY + r"(.*layer_norm)\.bias", r"funnel.\1.beta"),
        Rule(_BODY + r"(.+)", r"funnel.\1"),  # (.+): re.sub would also expand a second, empty match
    ], "funnel transformers-tf"), CLASSES),
    # PaddleNLP keeps transformers' names; paddle Linear weights are [in, out]
    "paddle": FormatRules(RuleSet([Rule(LINEAR_WEIGHT, r"\g<0>", "transpose"), SAME_NAMES], "funnel paddlenlp"),
                          CLASSES),
}
