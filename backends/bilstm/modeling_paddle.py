"""BiLSTM student in PaddlePaddle: the PyTorch reference, method by method.

`paddle.nn.LSTM` is not used: its fused `rnn` op computes float32 tanh and sigmoid several ulp off (a
float32 BiLSTM comes out twice as far from the float64 truth as torch's) and, in eval mode, keeps
nothing for the backward pass. `LSTM` below writes the recurrence out, as the TF port does, over torch's
parameter names, layout and gate order (i, f, g, o; two biases), with packed-sequence semantics.
"""
from __future__ import annotations

import paddle
from paddle import nn

from .._fw.paddle import sigmoid, tanh
from .._fw.paddle.nn import Embedding
from ..spec import port_heads
from .heads import HEADS as REGISTRY
from .weights import LSTM_DIRECTIONS


class LSTM(nn.Layer):
    """torch `nn.LSTM(input_size, hidden_size, batch_first=True, bidirectional=True)` on a packed batch."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        for suffix in LSTM_DIRECTIONS:  # torch's names and [4h, in] layout
            for name, shape in (("weight_ih_l0", [4 * hidden_size, input_size]),
                                ("weight_hh_l0", [4 * hidden_size, hidden_size]),
                                ("bias_ih_l0", [4 * hidden_size]), ("bias_hh_l0", [4 * hidden_size])):
                setattr(self, name + suffix, self.create_parameter(shape, is_bias=name.startswith("bias")))

    def run(self, suffix, inputs, valid, reverse: bool):
        """One direction: outputs [B, T, h] (zeros at padded steps) and the final h.

        A padded step keeps the state (torch's packing never runs it): the forward direction ends on the
        last token, the backward one starts there from the zero state.
        """
        weight_ih, weight_hh = getattr(self, "weight_ih_l0" + suffix), getattr(self, "weight_hh_l0" + suffix)
        projected = paddle.unbind(paddle.matmul(inputs, weight_ih, transpose_y=True)
                                  + getattr(self, "bias_ih_l0" + suffix) + getattr(self, "bias_hh_l0" + suffix), axis=1)
        h = paddle.zeros([inputs.shape[0], self.hidden_size], dtype=inputs.dtype)
        state = (h, h)
        outputs = [None] * len(projected)
        for t in reversed(range(len(projected))) if reverse else range(len(projected)):
            i, f, g, o = paddle.split(projected[t] + paddle.matmul(state[0], weight_hh, transpose_y=True), 4, axis=-1)
            new_c = sigmoid(f) * state[1] + sigmoid(i) * tanh(g)
            new_h = sigmoid(o) * tanh(new_c)
            step = valid[t].expand_as(new_h)  # paddle.where does not broadcast its condition
            state = (paddle.where(step, new_h, state[0]), paddle.where(step, new_c, state[1]))
            outputs[t] = paddle.where(step, new_h, paddle.zeros_like(new_h))
        return paddle.stack(outputs, axis=1), state[0]

    def forward(self, inputs, lengths):
        """(outputs [B, T, 2h], final h [2, B, h]) as torch's LSTM on `pack_padded_sequence(inputs, lengths)`."""
        steps = paddle.arange(inputs.shape[1], dtype=lengths.dtype)
        valid = paddle.unbind((steps[None, :] < lengths[:, None])[..., None], axis=1)  # per step [B, 1]
        outputs_f, final_f = self.run(LSTM_DIRECTIONS[0], inputs, valid, reverse=False)
        outputs_b, final_b = self.run(LSTM_DIRECTIONS[1], inputs, valid, reverse=True)
        return paddle.concat([outputs_f, outputs_b], axis=-1), paddle.stack([final_f, final_b])


class BiLSTMForSequenceClassification(nn.Layer):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.embedding = Embedding(config.vocab_size, config.embedding_dim, padding_idx=config.padding_idx)
        self.lstm = LSTM(config.embedding_dim, config.hidden_size)
        self.fc = nn.Linear(config.features_size, config.fc_hidden_size)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.fc_hidden_size, config.num_labels)

    def get_input_embeddings(self):
        return self.embedding

    def encode(self, embeds, attention_mask):
        # paddle: our LSTM takes the lengths itself (torch packs)
        outputs, final_states = self.lstm(embeds, attention_mask.sum(-1))
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


# head name -> port class, from the family's head registry (heads.py)
HEADS = port_heads(REGISTRY, globals())
