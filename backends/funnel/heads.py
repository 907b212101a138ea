"""Funnel's heads: port class, transformers and PaddleNLP classes, final outputs, choices axis."""
from ..spec import Head

HEADS = {
    "model": Head("FunnelModel", ("last_hidden_state",), "FunnelModel", "FunnelModel"),
    "base": Head("FunnelBaseModel", ("last_hidden_state",), "FunnelBaseModel", "FunnelBaseModel"),
    "seqcls": Head("FunnelForSequenceClassification", ("logits",), "FunnelForSequenceClassification",
                   "FunnelForSequenceClassification"),
    "qa": Head("FunnelForQuestionAnswering", ("start_logits", "end_logits"), "FunnelForQuestionAnswering",
               "FunnelForQuestionAnswering"),
    "mc": Head("FunnelForMultipleChoice", ("logits",), "FunnelForMultipleChoice", "FunnelForMultipleChoice",
               choices=True),
    # the published checkpoints' ELECTRA-style discriminator: one score per token
    "pretraining": Head("FunnelForPreTraining", ("logits",), "FunnelForPreTraining", "FunnelForPreTraining"),
    "mlm": Head("FunnelForMaskedLM", ("logits",), "FunnelForMaskedLM", "FunnelForMaskedLM"),
}
