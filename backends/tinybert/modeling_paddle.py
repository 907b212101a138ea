"""TinyBERT in PaddlePaddle: the PyTorch reference (modeling_torch.py), class by class, on the BERT port.

Besides BERT's outputs (every hidden state, attention probabilities and pre-softmax "attention_scores",
which TinyBERT's attention loss compares), every model returns "fit_hidden_states": fit_dense of each
hidden state, stacked [layers + 1, B, T, fit_size] (index it like hidden_states).
"""
from __future__ import annotations

import paddle
import paddle.nn.functional as F
from paddle import nn

from ..bert import modeling_paddle as bert
from ..spec import port_heads
from .heads import HEADS as REGISTRY


class TinyBertModel(bert.BertModel):
    def __init__(self, config, add_pooling_layer=True):
        super().__init__(config, add_pooling_layer)
        self.fit_dense = nn.Linear(config.hidden_size, config.fit_size)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, inputs_embeds=None):
        outputs = super().forward(input_ids, attention_mask, token_type_ids, inputs_embeds)
        outputs["fit_hidden_states"] = self.fit_dense(paddle.stack(outputs["hidden_states"]))
        return outputs


class TinyBertPreTrainedHead(bert.BertPreTrainedHead):
    base_model_prefix = "tinybert"
    base_model_class = TinyBertModel
    add_pooling_layer = True  # PaddleNLP's TinyBertModel always has its pooler


class TinyBertForSequenceClassification(TinyBertPreTrainedHead, bert.BertForSequenceClassification):
    """Scores from the ReLU of the pooled first token, no dropout (Huawei's and PaddleNLP's TinyBERT)."""

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, inputs_embeds=None):
        outputs = self.base_model(input_ids, attention_mask, token_type_ids, inputs_embeds)
        return {"logits": self.classifier(F.relu(outputs["pooler_output"])), **outputs}


class TinyBertForQuestionAnswering(TinyBertPreTrainedHead, bert.BertForQuestionAnswering):
    pass


class TinyBertForMultipleChoice(TinyBertPreTrainedHead, bert.BertForMultipleChoice):
    pass


# head name -> port class, from the family's head registry (heads.py)
HEADS = port_heads(REGISTRY, globals())
