"""BiLSTM student (Tang et al. 2019) in PyTorch: the reference the other ports mirror, method by method.

Padding never reaches the result: `nn.LSTM` runs on packed sequences whose lengths come from the
attention mask (right padding), so the forward direction ends on each sentence's last token, the
backward direction starts there, and the outputs at padded positions are zeros.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from ..spec import port_heads
from .heads import HEADS as REGISTRY


class BiLSTMForSequenceClassification(nn.Module):
    """Embedding -> BiLSTM -> sentence vector(s) -> ReLU fully-connected layer -> classifier."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=config.padding_idx)
        self.lstm = nn.LSTM(config.embedding_dim, config.hidden_size, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(config.features_size, config.fc_hidden_size)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.fc_hidden_size, config.num_labels)

    def get_input_embeddings(self):
        return self.embedding

    def encode(self, embeds, attention_mask):
        """BiLSTM outputs [B, T, 2h] and the sentence vector [B, 2h]: the last forward and first backward state."""
        lengths = attention_mask.sum(-1).cpu()
        packed = pack_padded_sequence(embeds, lengths, batch_first=True, enforce_sorted=False)
        packed_outputs, (final_states, _) = self.lstm(packed)
        outputs, _ = pad_packed_sequence(packed_outputs, batch_first=True, total_length=embeds.shape[1])
        return outputs, torch.cat([final_states[0], final_states[1]], dim=-1)

    @staticmethod
    def pair_features(a, b):
        return torch.cat([a, b, a * b, torch.abs(a - b)], dim=-1)

    def forward(self, input_ids=None, attention_mask=None, input_ids_b=None, attention_mask_b=None,
                inputs_embeds=None):
        """Sentence a from input_ids (or inputs_embeds); with config.pair, sentence b from input_ids_b."""
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
        hidden = self.dropout(torch.relu(self.fc(sentence)))
        return {"logits": self.classifier(hidden), "hidden_states": hidden_states + [hidden]}


def _default_mask(attention_mask, embeds):
    if attention_mask is not None:
        return attention_mask
    return torch.ones(embeds.shape[:2], dtype=torch.int64, device=embeds.device)


# head name -> port class, from the family's head registry (heads.py)
HEADS = port_heads(REGISTRY, globals())
