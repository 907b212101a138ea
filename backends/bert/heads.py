"""BERT's heads: port class, transformers and PaddleNLP classes, final outputs, choices axis."""
from ..spec import Head

HEADS = {
    "base": Head("BertModel", ("last_hidden_state", "pooler_output"), "BertModel", "BertModel"),
    "seqcls": Head("BertForSequenceClassification", ("logits",), "BertForSequenceClassification",
                   "BertForSequenceClassification"),
    "qa": Head("BertForQuestionAnswering", ("start_logits", "end_logits"), "BertForQuestionAnswering",
               "BertForQuestionAnswering"),
    "mc": Head("BertForMultipleChoice", ("logits",), "BertForMultipleChoice", "BertForMultipleChoice",
               choices=True),
    # PaddleNLP's MLM head has another layout (decoder_bias, a tied decoder): not converted
    "mlm": Head("BertForMaskedLM", ("logits",), "BertForMaskedLM"),
    "tokcls": Head("BertForTokenClassification", ("logits",), "BertForTokenClassification",
                   "BertForTokenClassification"),
}
