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
    "mlm": Head("BertForMaskedLM", ("logits",), "BertForMaskedLM", "BertForMaskedLM"),
    "tokcls": Head("BertForTokenClassification", ("logits",), "BertForTokenClassification",
                   "BertForTokenClassification"),
    # MLM + next-sentence; PaddleNLP spells its class BertForPretraining
    "pretraining": Head("BertForPreTraining", ("prediction_logits", "seq_relationship_logits"), "BertForPreTraining",
                        "BertForPretraining"),
}
