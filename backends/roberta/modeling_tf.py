"""RoBERTa in TensorFlow: the PyTorch reference (modeling_torch.py), class by class, on the BERT port.

Positions count the non-padding tokens from padding_idx + 1 (padding keeps padding_idx), computed from
input_ids also when inputs_embeds is given. Everything else is BERT's classes.
"""
from __future__ import annotations

import tensorflow as tf

from .._fw.tf import nn, tanh
from ..bert import modeling_tf as bert
from ..spec import port_heads
from .heads import HEADS as REGISTRY


class RobertaEmbeddings(bert.BertEmbeddings):
    def __init__(self, config):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size,
                                                padding_idx=config.pad_token_id)

    def create_position_ids(self, input_ids, inputs_embeds):
        """From input_ids when given; without them (embeddings only) padding_idx + 1 .. padding_idx + T."""
        if input_ids is None:
            return super().create_position_ids(input_ids, inputs_embeds) + self.padding_idx + 1
        mask = tf.cast(tf.not_equal(input_ids, self.padding_idx), tf.int64)
        return tf.cumsum(mask, axis=1) * mask + self.padding_idx


class RobertaModel(bert.BertModel):
    embeddings_class = RobertaEmbeddings


class RobertaPreTrainedHead(bert.BertPreTrainedHead):
    base_model_prefix = "roberta"
    base_model_class = RobertaModel


class RobertaClassificationHead(nn.Layer):
    """tanh layer and scores over the <s> token."""

    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.classifier_dropout_prob)
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, features):
        x = tanh(self.dense(self.dropout(features[:, 0])))  # the adapter's: TF's float32 tanh is several ulp off
        return self.out_proj(self.dropout(x))


class RobertaForSequenceClassification(RobertaPreTrainedHead):
    """num_labels scores from the <s> token (one score: regression); no pooler."""

    add_pooling_layer = False

    def __init__(self, config):
        super().__init__(config)
        self.classifier = RobertaClassificationHead(config)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, inputs_embeds=None):
        outputs = self.base_model(input_ids, attention_mask, token_type_ids, inputs_embeds)
        return {"logits": self.classifier(outputs["last_hidden_state"]), **outputs}


class RobertaForMultipleChoice(RobertaPreTrainedHead, bert.BertForMultipleChoice):
    pass


class RobertaForQuestionAnswering(RobertaPreTrainedHead, bert.BertForQuestionAnswering):
    pass


class RobertaForTokenClassification(RobertaPreTrainedHead, bert.BertForTokenClassification):
    pass


class RobertaLMHead(nn.Layer):
    """dense, exact GELU (whatever hidden_act), layer_norm, then the decoder (tied unless the config unties it)."""

    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.bias = self.parameter([config.vocab_size], "bias")
        self.gelu = bert.activation("gelu")
        self.decoder = bert.untied_decoder(config)

    def forward(self, features, word_embeddings):
        x = self.layer_norm(self.gelu(self.dense(features)))
        return bert.decode(x, self.decoder, word_embeddings, self.bias)


class RobertaForMaskedLM(RobertaPreTrainedHead):
    """Vocabulary scores for every token; the decoder is the word-embedding matrix (tied)."""

    add_pooling_layer = False

    def __init__(self, config):
        super().__init__(config)
        self.lm_head = RobertaLMHead(config)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, inputs_embeds=None):
        outputs = self.base_model(input_ids, attention_mask, token_type_ids, inputs_embeds)
        return {"logits": self.lm_head(outputs["last_hidden_state"], self.get_input_embeddings().weight), **outputs}


# head name -> port class, from the family's head registry (heads.py)
HEADS = port_heads(REGISTRY, globals())
