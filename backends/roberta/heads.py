"""RoBERTa's heads: port class, transformers and PaddleNLP classes, final outputs, choices axis."""
from ..spec import Head

HEADS = {
    "base": Head("RobertaModel", ("last_hidden_state", "pooler_output"), "RobertaModel", "RobertaModel"),
    "seqcls": Head("RobertaForSequenceClassification", ("logits",), "RobertaForSequenceClassification",
                   "RobertaForSequenceClassification"),
    "qa": Head("RobertaForQuestionAnswering", ("start_logits", "end_logits"), "RobertaForQuestionAnswering",
               "RobertaForQuestionAnswering"),
    "mc": Head("RobertaForMultipleChoice", ("logits",), "RobertaForMultipleChoice", "RobertaForMultipleChoice",
               choices=True),
    "mlm": Head("RobertaForMaskedLM", ("logits",), "RobertaForMaskedLM", "RobertaForMaskedLM"),
    "tokcls": Head("RobertaForTokenClassification", ("logits",), "RobertaForTokenClassification",
                   "RobertaForTokenClassification"),
}
