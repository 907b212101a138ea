"""Funnel in transformers PyTorch (canonical), transformers TF (h5) and PaddleNLP checkpoints."""
from backends.funnel.weights import LINEAR_WEIGHT
from backends.weights import Rule, RuleSet, SAME_NAMES

from . import FormatRules, dense, head_classes, norm

CLASSES = head_classes("funnel", "transformers")
_BODY = r"(?:funnel\.)?"  # head models hold the body as `funnel.`; transformers' TF main layer is always "funnel"


def _keras_rows() -> list[Rule]:
    """Canonical -> transformers' TF weight names (below the model scope); list items are `name_._i`."""
    rows = [Rule(_BODY + r"embeddings\.word_embeddings\.weight", "funnel/embeddings/word_embeddings/weight:0"),
            *norm(_BODY + r"embeddings\.layer_norm", "funnel/embeddings/layer_norm", ":0")]
    for layer, to in ((r"encoder\.blocks\.(?P<b>\d+)\.(?P<i>\d+)", r"funnel/encoder/blocks_._\g<b>_._\g<i>"),
                      (r"decoder\.layers\.(?P<i>\d+)", r"funnel/decoder/layers_._\g<i>")):
        layer = _BODY + layer
        rows += [*norm(layer + r"\.(?P<m>attention|ffn)\.layer_norm", to + r"/\g<m>/layer_norm", ":0"),
                 *dense(layer + r"\.(?P<m>attention|ffn)\.(?P<d>q_head|k_head|v_head|post_proj|linear_1|linear_2)",
                        to + r"/\g<m>/\g<d>", ":0"),
                 Rule(layer + r"\.attention\.(?P<p>r_w_bias|r_r_bias|r_kernel|r_s_bias|seg_embed)",
                      to + r"/attention/\g<p>:0")]
    for head in ("classifier.linear_hidden", "classifier.linear_out", "qa_outputs"):
        rows += dense(head.replace(".", r"\."), head.replace(".", "/"), ":0")
    return rows


FORMATS = {
    "hf": FormatRules(RuleSet([SAME_NAMES], "funnel transformers"), CLASSES),
    "tf": FormatRules(RuleSet(_keras_rows(), "funnel transformers-tf"), CLASSES),
    # PaddleNLP keeps transformers' names; paddle Linear weights are [in, out]
    "paddle": FormatRules(RuleSet([Rule(LINEAR_WEIGHT, r"\g<0>", "transpose"), SAME_NAMES], "funnel paddlenlp"),
                          head_classes("funnel", "paddlenlp")),
}
