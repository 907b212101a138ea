"""BiLSTM student in TensorFlow: the PyTorch reference, method by method.

TF has no LSTM with torch's interface and parameters, so `LSTM` below writes the recurrence with plain
tf ops over Keras' weights (`LSTMCell`: one kernel, one recurrent kernel, one bias; gates i, f, c, o)
and reproduces packed-sequence semantics by masking steps past each sentence's length.
"""
from __future__ import annotations

import tensorflow as tf

from .._fw.tf import sigmoid, tanh
from .._fw.tf.nn import Dropout, Embedding, Layer, Linear
from ..spec import port_heads
from .heads import HEADS as REGISTRY
from .weights import LSTM_DIRECTIONS


class LSTMCell(Layer):
    """Keras `LSTMCell` weights: kernel [in, 4h], recurrent_kernel [h, 4h], bias [4h]; gates i, f, c, o."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.kernel = self.parameter([input_size, 4 * hidden_size], "kernel")
        self.recurrent_kernel = self.parameter([hidden_size, 4 * hidden_size], "recurrent_kernel")
        self.bias = self.parameter([4 * hidden_size], "bias")

    def project(self, inputs):
        """inputs @ kernel + bias for every step at once: [B, T, in] -> [B, T, 4h]."""
        return tf.einsum("bti,ig->btg", inputs, self.kernel) + self.bias

    def forward(self, projected, state):
        """One step: the step's projected input and the (h, c) state -> the new (h, c)."""
        h, c = state
        i, f, g, o = tf.split(projected + tf.matmul(h, self.recurrent_kernel), 4, axis=-1)
        c = sigmoid(f) * c + sigmoid(i) * tanh(g)
        return sigmoid(o) * tanh(c), c


class LSTM(Layer):
    """torch `nn.LSTM(input_size, hidden_size, batch_first=True, bidirectional=True)` on a packed batch."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.forward_layer = LSTMCell(input_size, hidden_size)  # Keras Bidirectional's names
        self.backward_layer = LSTMCell(input_size, hidden_size)

    def named_parameters(self, prefix: str = ""):
        """torch's names. Keras has one bias where torch has bias_ih + bias_hh: both names stand for it."""
        for suffix, cell in zip(LSTM_DIRECTIONS, (self.forward_layer, self.backward_layer)):
            yield f"{prefix}weight_ih_l0{suffix}", cell.kernel
            yield f"{prefix}weight_hh_l0{suffix}", cell.recurrent_kernel
            yield f"{prefix}bias_ih_l0{suffix}", cell.bias
            yield f"{prefix}bias_hh_l0{suffix}", cell.bias

    def run(self, cell, inputs, valid, reverse: bool):
        """One direction: outputs [B, T, h] (zeros at padded steps) and the final h.

        A padded step keeps the state (torch's packing never runs it): the forward direction ends on the
        last token, the backward one starts there from the zero state.
        """
        projected = tf.unstack(cell.project(inputs), axis=1)
        h = tf.zeros([tf.shape(inputs)[0], self.hidden_size], dtype=inputs.dtype)
        state = (h, h)
        outputs = [None] * len(projected)
        for t in reversed(range(len(projected))) if reverse else range(len(projected)):
            new_h, new_c = cell(projected[t], state)
            state = (tf.where(valid[t], new_h, state[0]), tf.where(valid[t], new_c, state[1]))
            outputs[t] = tf.where(valid[t], new_h, tf.zeros_like(new_h))
        return tf.stack(outputs, axis=1), state[0]

    def forward(self, inputs, lengths):
        """(outputs [B, T, 2h], final h [2, B, h]) as torch's LSTM on `pack_padded_sequence(inputs, lengths)`."""
        valid = tf.unstack(tf.sequence_mask(lengths, inputs.shape[1])[..., None], axis=1)  # per step [B, 1]
        outputs_f, final_f = self.run(self.forward_layer, inputs, valid, reverse=False)
        outputs_b, final_b = self.run(self.backward_layer, inputs, valid, reverse=True)
        return tf.concat([outputs_f, outputs_b], axis=-1), tf.stack([final_f, final_b])


class BiLSTMForSequenceClassification(Layer):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.embedding = Embedding(config.vocab_size, config.embedding_dim, padding_idx=config.padding_idx)
        self.lstm = LSTM(config.embedding_dim, config.hidden_size)
        self.fc = Linear(config.features_size, config.fc_hidden_size)
        self.dropout = Dropout(config.dropout)
        self.classifier = Linear(config.fc_hidden_size, config.num_labels)

    def get_input_embeddings(self):
        return self.embedding

    def encode(self, embeds, attention_mask):
        # tf: our LSTM takes the lengths itself (torch packs)
        outputs, final_states = self.lstm(embeds, tf.reduce_sum(attention_mask, axis=-1))
        return outputs, tf.concat([final_states[0], final_states[1]], axis=-1)

    @staticmethod
    def pair_features(a, b):
        return tf.concat([a, b, a * b, tf.abs(a - b)], axis=-1)

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
        hidden = self.dropout(tf.nn.relu(self.fc(sentence)))
        return {"logits": self.classifier(hidden), "hidden_states": hidden_states + [hidden]}


def _default_mask(attention_mask, embeds):
    if attention_mask is not None:
        return attention_mask
    return tf.ones(tf.shape(embeds)[:2], dtype=tf.int64)


# head name -> port class, from the family's head registry (heads.py)
HEADS = port_heads(REGISTRY, globals())
