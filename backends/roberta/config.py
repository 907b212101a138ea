"""RobertaConfig: BertConfig with RoBERTa's defaults and its position-id constraint, and the presets."""
from __future__ import annotations

from dataclasses import dataclass

from ..bert.config import BertConfig
from ..spec import Preset


@dataclass
class RobertaConfig(BertConfig):
    model_type = "roberta"

    vocab_size: int = 50265
    max_position_embeddings: int = 514
    type_vocab_size: int = 1
    layer_norm_eps: float = 1e-5
    pad_token_id: int | None = 1

    def validate(self):
        super().validate()
        if self.pad_token_id is None:
            self.fail("pad_token_id", "must be set: RoBERTa counts positions from pad_token_id + 1")
        if self.max_position_embeddings < self.pad_token_id + 2:
            self.fail("max_position_embeddings", f"must exceed pad_token_id + 1 = {self.pad_token_id + 1}: "
                                                 "positions start after the padding index")


def _shape(layers: int, hidden: int, heads: int) -> RobertaConfig:
    return RobertaConfig(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads,
                         intermediate_size=4 * hidden)


# Facebook's released RoBERTa checkpoints (transformers' roberta-base, roberta-large)
PRESETS = {
    "roberta-base": Preset("roberta-base", "roberta", _shape(12, 768, 12), "base", "L12 H768 A12, byte-level BPE"),
    "roberta-large": Preset("roberta-large", "roberta", _shape(24, 1024, 16), "base", "L24 H1024 A16, byte-level BPE"),
}
