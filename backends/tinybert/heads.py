"""TinyBERT's heads (PaddleNLP's classes; transformers has none). TinyBERT's losses use the fitted
hidden states of every head, so they are final outputs too."""
from ..spec import Head

HEADS = {
    "base": Head("TinyBertModel", ("last_hidden_state", "pooler_output", "fit_hidden_states"),
                 paddlenlp="TinyBertModel"),
    "seqcls": Head("TinyBertForSequenceClassification", ("logits", "fit_hidden_states"),
                   paddlenlp="TinyBertForSequenceClassification"),
    "qa": Head("TinyBertForQuestionAnswering", ("start_logits", "end_logits", "fit_hidden_states"),
               paddlenlp="TinyBertForQuestionAnswering"),
    "mc": Head("TinyBertForMultipleChoice", ("logits", "fit_hidden_states"), paddlenlp="TinyBertForMultipleChoice",
               choices=True),
}
