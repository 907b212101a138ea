"""FunnelConfig: every option of transformers' FunnelConfig, framework-free, and the public presets."""
from __future__ import annotations

from dataclasses import dataclass, field

from .._fw import ACTIVATIONS
from ..config_base import ConfigBase, check_adapter, check_choice, check_positive_int, check_probability
from ..spec import Preset


@dataclass
class FunnelConfig(ConfigBase):
    model_type = "funnel"

    vocab_size: int = 30522
    block_sizes: list = field(default_factory=lambda: [4, 4, 4])
    block_repeats: list | None = None
    num_decoder_layers: int = 2
    d_model: int = 768
    n_head: int = 12
    d_head: int = 64
    d_inner: int = 3072
    hidden_act: str = "gelu_new"
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    initializer_range: float = 0.1
    initializer_std: float | None = None
    layer_norm_eps: float = 1e-9
    pooling_type: str = "mean"
    attention_type: str = "relative_shift"
    separate_cls: bool = True
    truncate_seq: bool = True
    pool_q_only: bool = True
    type_vocab_size: int = 3
    max_position_embeddings: int = 512
    pad_token_id: int | None = 0
    num_labels: int = 2
    tie_word_embeddings: bool = True  # the MLM head's lm_head weight is the word-embedding matrix
    adapter: str | None = None  # an adapter config string ("seq_bn", "lora[r=4]": backends/adapters) or None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.block_sizes = list(self.block_sizes) if isinstance(self.block_sizes, (list, tuple)) else self.block_sizes
        if self.block_repeats is None and isinstance(self.block_sizes, list):
            self.block_repeats = [1] * len(self.block_sizes)
        super().__post_init__()

    @classmethod
    def rename_hf_keys(cls, known, extra):
        for alias, name in (("hidden_size", "d_model"), ("num_attention_heads", "n_head")):
            if alias in extra:
                known.setdefault(name, extra.pop(alias))
        if "id2label" in extra and "num_labels" not in known:
            known["num_labels"] = len(extra["id2label"])

    def validate(self):
        if not isinstance(self.block_sizes, list) or not self.block_sizes:
            self.fail("block_sizes", "must be a non-empty list of positive layer counts")
        if any(not isinstance(b, int) or b < 1 for b in self.block_sizes):
            self.fail("block_sizes", "must hold positive integers")
        if (not isinstance(self.block_repeats, list) or len(self.block_repeats) != len(self.block_sizes)
                or any(not isinstance(r, int) or r < 1 for r in self.block_repeats)):
            self.fail("block_repeats", f"must hold {len(self.block_sizes)} positive integers, one per block")
        check_positive_int(self, "vocab_size", "d_model", "n_head", "d_head", "d_inner", "num_labels",
                           "type_vocab_size", "max_position_embeddings")
        if self.d_model % 2:
            self.fail("d_model", "must be even: the sinusoidal position encoding has d_model/2 frequencies")
        if not isinstance(self.num_decoder_layers, int) or self.num_decoder_layers < 0:
            self.fail("num_decoder_layers", "must be a non-negative integer")
        check_choice(self, "hidden_act", ACTIVATIONS)
        if not isinstance(self.tie_word_embeddings, bool):
            self.fail("tie_word_embeddings", "must be true or false")
        check_probability(self, "hidden_dropout", "attention_dropout", "activation_dropout")
        if not isinstance(self.layer_norm_eps, (int, float)) or self.layer_norm_eps <= 0:
            self.fail("layer_norm_eps", "must be a positive number")
        check_choice(self, "pooling_type", ("mean", "max"))
        check_choice(self, "attention_type", ("relative_shift", "factorized"))
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            self.fail("pad_token_id", f"must index the vocabulary (size {self.vocab_size})")
        check_adapter(self)

    @property
    def num_blocks(self) -> int:
        return len(self.block_sizes)

    @property
    def num_hidden_layers(self) -> int:
        return sum(self.block_sizes)


def _shape(layers, d_model, **overrides):
    heads = d_model // 64
    return FunnelConfig(block_sizes=layers, d_model=d_model, n_head=heads, d_head=64, d_inner=4 * d_model,
                        **overrides)


# The public Funnel-Transformer checkpoints (funnel-transformer/<size>[-base]); "-base" has no decoder.
_SHAPES = {
    "small": (dict(layers=[4, 4, 4], d_model=768), "B4-4-4H768"),
    "medium": (dict(layers=[6, 3, 3], d_model=768, block_repeats=[1, 2, 2]), "B6-3x2-3x2H768"),
    "intermediate": (dict(layers=[6, 6, 6], d_model=768), "B6-6-6H768"),
    "large": (dict(layers=[8, 8, 8], d_model=1024), "B8-8-8H1024"),
    "xlarge": (dict(layers=[10, 10, 10], d_model=1024), "B10-10-10H1024"),
}

PRESETS = {}
for _size, (_kw, _desc) in _SHAPES.items():
    PRESETS[f"funnel-{_size}"] = Preset(f"funnel-{_size}", "funnel", _shape(**_kw), "model", f"{_desc}, 2 decoder layers")
    PRESETS[f"funnel-{_size}-base"] = Preset(f"funnel-{_size}-base", "funnel", _shape(**_kw), "base", f"{_desc}, no decoder")
