"""Funnel in transformers PyTorch (canonical), transformers TF (h5) and PaddleNLP checkpoints."""
from backends.funnel.weights import LINEAR_WEIGHT
from backends.weights import Rule, RuleSet, SAME_NAMES

from . import FormatRules, dense, head_classes, norm

CLASSES = head_classes("funnel", "transformers")
_BODY = r"(?:funnel\.)?"  # head models hold the body as `funnel.`; transformers' TF main layer is always "funnel"
# a torch state_dict (pytorch_model.bin) of a tied FunnelForMaskedLM, and every PaddleNLP one, list the tied
# lm_head weight besides the word embeddings: a copy, not a parameter (skipped and reported when reading)
TIED_LM_HEAD = (r"lm_head\.weight",)
# transformers' TF classes and PaddleNLP's FunnelForMaskedLM only tie lm_head to the word embeddings (PaddleNLP's
# untied lm_head has a [d_model] bias and fails); configs in these formats are tied, an untied weight is refused
TIED = {"tie_word_embeddings": True}


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
    for head in ("classifier.linear_hidden", "classifier.linear_out", "qa_outputs",
                 "discriminator_predictions.dense", "discriminator_predictions.dense_prediction"):
        rows += dense(head.replace(".", r"\."), head.replace(".", "/"), ":0")
    rows.append(Rule(r"lm_head\.bias", "lm_head/bias:0"))  # its weight is the tied word embeddings
    return rows


FORMATS = {
    "hf": FormatRules(RuleSet([SAME_NAMES], "funnel transformers"), CLASSES, TIED_LM_HEAD),
    # TFFunnelMaskedLMHead holds the main layer's embeddings, so Keras lists them under "lm_head" too
    "tf": FormatRules(RuleSet(_keras_rows(), "funnel transformers-tf (lm_head tied to the word embeddings only)"),
                      CLASSES, config=TIED, shared={"lm_head": r"funnel/embeddings/.*"}),
    # PaddleNLP keeps transformers' names; paddle Linear weights are [in, out]
    "paddle": FormatRules(RuleSet([Rule(LINEAR_WEIGHT, r"\g<0>", "transpose"),
                                   Rule(r"(?!lm_head\.weight$).*", r"\g<0>")],
                                  "funnel paddlenlp (lm_head tied to the word embeddings only)"),
                          head_classes("funnel", "paddlenlp"), TIED_LM_HEAD, config=TIED),
}
