"""TinyBertConfig: BertConfig plus fit_size (the teacher's hidden width), PaddleNLP's defaults, presets."""
from __future__ import annotations

from dataclasses import dataclass

from ..bert.config import BertConfig
from ..config_base import check_positive_int
from ..spec import Preset


@dataclass
class TinyBertConfig(BertConfig):
    model_type = "tinybert"

    type_vocab_size: int = 16  # PaddleNLP's TinyBertConfig default; the released checkpoints use 2
    fit_size: int = 768

    def validate(self):
        super().validate()
        check_positive_int(self, "fit_size")


def _student(layers: int, hidden: int, intermediate: int) -> TinyBertConfig:
    return TinyBertConfig(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=12,
                          intermediate_size=intermediate, type_vocab_size=2, fit_size=768)


# Huawei's general-distillation students of bert-base-uncased (PaddleNLP's tinybert-4l-312d, tinybert-6l-768d)
PRESETS = {
    "tinybert-4l-312d": Preset("tinybert-4l-312d", "tinybert", _student(4, 312, 1200), "base",
                               "L4 H312 A12, fit to a 768-wide teacher"),
    "tinybert-6l-768d": Preset("tinybert-6l-768d", "tinybert", _student(6, 768, 3072), "base",
                               "L6 H768 A12, fit to a 768-wide teacher"),
}
