"""paddle layers that behave like torch's where paddle's own differ; every Paddle port uses these."""
from __future__ import annotations

import paddle
import paddle.nn.functional as F
from paddle import nn


class Embedding(nn.Embedding):
    """torch's nn.Embedding: the padding row is looked up as stored and gets no gradient.

    paddle's own padding_idx returns zeros for padding ids, whatever the row holds.
    """

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None):
        super().__init__(num_embeddings, embedding_dim)
        self.padding_idx = padding_idx

    def forward(self, ids):
        vectors = F.embedding(ids, self.weight)
        if self.padding_idx is None:
            return vectors
        return paddle.where((ids == self.padding_idx)[..., None], vectors.detach(), vectors)


class LayerNorm(nn.LayerNorm):
    """paddle's layer_norm op holds epsilon as a float32 (1e-9 becomes 9.99999972e-10), which in float64
    moves the gradients of low-variance rows (a zero <pad> embedding) at the 1e-8 level; computed here
    in the input's dtype."""

    def forward(self, x):
        centered = x - x.mean(axis=-1, keepdim=True)
        variance = (centered * centered).mean(axis=-1, keepdim=True)
        return centered / paddle.sqrt(variance + self._epsilon) * self.weight + self.bias
