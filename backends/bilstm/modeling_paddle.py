"""BiLSTM student in PaddlePaddle: the PyTorch reference, method by method.

`paddle.nn.LSTM(direction="bidirect")` has torch's parameter names, layout and gate order, and its
`sequence_length` argument gives packed-sequence semantics.
"""
from __future__ import annotations

import paddle
from paddle import nn


class LSTM(nn.LSTM):
    """`paddle.nn.LSTM` that stays in training mode: in eval mode its fused `rnn` op runs with is_test and
    keeps nothing for the backward pass, which then fails. One layer has no dropout: both modes compute the same."""

    training = property(lambda self: True, lambda self, mode: None)


class BiLSTMForSequenceClassification(nn.Layer):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=config.padding_idx)
        self.lstm = LSTM(config.embedding_dim, config.hidden_size, direction="bidirect")
        self.fc = nn.Linear(config.features_size, config.fc_hidden_size)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.fc_hidden_size, config.num_labels)

    def get_input_embeddings(self):
        return self.embedding

    def encode(self, embeds, attention_mask):
        # paddle: lengths go to the LSTM itself (torch packs); padded outputs are zeros, as torch's unpacking
        outputs, (final_states, _) = self.lstm(embeds, sequence_length=attention_mask.sum(-1))
        return outputs, paddle.concat([final_states[0], final_states[1]], axis=-1)

    @staticmethod
    def pair_features(a, b):
        return paddle.concat([a, b, a * b, paddle.abs(a - b)], axis=-1)

    def forward(self, input_ids=None, attention_mask=None, input_ids_b=None, attention_mask_b=None,
                inputs_embeds=None):
        if inputs_embeds is None:
            inputs_embeds = self.embedding(input_ids)
        outputs, sentence = self.encode(inputs_embeds, _default_mask(attention_mask, inputs_embeds))
        hidden_states = [outputs, sentence]
        if self.config.pair:
            if input_ids_b is None:
                raise ValueError("a pair model needs input_ids_b")
            embeds_b = self.embedding(input_ids_b)
            outputs_b, sentence_b = self.encode(embeds_b, _default_mask(attention_mask_b, embeds_b))
            hidden_states += [outputs_b, sentence_b]
            sentence = self.pair_features(sentence, sentence_b)
        hidden = self.dropout(nn.functional.relu(self.fc(sentence)))
        return {"logits": self.classifier(hidden), "hidden_states": hidden_states + [hidden]}


def _default_mask(attention_mask, embeds):
    if attention_mask is not None:
        return attention_mask
    return paddle.ones(embeds.shape[:2], dtype="int64")


HEADS = {"seqcls": BiLSTMForSequenceClassification}
