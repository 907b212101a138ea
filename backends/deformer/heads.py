"""The DeFormer's heads: port class, final outputs, choices axis. A DeFormer's weights are its base family's
(BERT or RoBERTa), so the transformers and PaddleNLP classes of a head are the base family's: named here as
BERT's, and `base_class(config, head, ecosystem)` gives the base family's own for a config."""
from ..spec import Head

HEADS = {
    # the body alone (as the base family's "base" head: a bare BertModel/RobertaModel checkpoint opens as it)
    "base": Head("DeformerModel", ("last_hidden_state", "pooler_output"), "BertModel", "BertModel"),
    "qa": Head("DeformerForQuestionAnswering", ("start_logits", "end_logits"), "BertForQuestionAnswering",
               "BertForQuestionAnswering"),
    "mc": Head("DeformerForMultipleChoice", ("logits",), "BertForMultipleChoice", "BertForMultipleChoice",
               choices=True),
    "seqcls": Head("DeformerForSequenceClassification", ("logits",), "BertForSequenceClassification",
                   "BertForSequenceClassification"),
}


def base_class(config, head: str, ecosystem: str = "transformers") -> str | None:
    """The class `ecosystem` ("transformers" or "paddlenlp") calls `head` of the DeFormer's base family."""
    import backends

    return getattr(backends.family(config.base_family).head_registry[head], ecosystem)
