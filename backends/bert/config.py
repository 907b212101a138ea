"""BertConfig: the options of transformers' BertConfig that an encoder uses, framework-free, and presets."""
from __future__ import annotations

from dataclasses import dataclass, field

from .._fw import ACTIVATIONS
from ..config_base import ConfigBase, check_adapter, check_choice, check_positive_int, check_probability
from ..errors import ConfigError
from ..spec import Preset

# other names the same options have in config.json files: PaddleNLP's attribute_map, older BERT configs
ALIASES = {"num_classes": "num_labels", "dropout": "classifier_dropout", "layer_norm_epsilon": "layer_norm_eps"}


@dataclass
class BertConfig(ConfigBase):
    model_type = "bert"

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int | None = 0
    position_embedding_type: str = "absolute"
    classifier_dropout: float | None = None
    num_labels: int = 2
    adapter: str | None = None  # an adapter config string ("seq_bn", "lora[r=4]": backends/adapters) or None
    extra: dict = field(default_factory=dict)

    @classmethod
    def rename_hf_keys(cls, known, extra):
        for alias, name in ALIASES.items():
            if alias in extra:
                known.setdefault(name, extra.pop(alias))
        if "id2label" in extra and "num_labels" not in known:
            known["num_labels"] = len(extra["id2label"])

    def validate(self):
        check_positive_int(self, "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                           "intermediate_size", "max_position_embeddings", "type_vocab_size", "num_labels")
        if self.hidden_size % self.num_attention_heads:
            self.fail("hidden_size", f"must be a multiple of num_attention_heads={self.num_attention_heads}")
        check_choice(self, "hidden_act", ACTIVATIONS)
        check_probability(self, "hidden_dropout_prob", "attention_probs_dropout_prob")
        if self.classifier_dropout is not None:
            check_probability(self, "classifier_dropout")
        if isinstance(self.layer_norm_eps, bool) or not isinstance(self.layer_norm_eps, (int, float)) \
                or self.layer_norm_eps <= 0:
            self.fail("layer_norm_eps", "must be a positive number")
        # relative_key(_query) position scores are not ported; their checkpoints would load and compute wrongly
        check_choice(self, "position_embedding_type", ("absolute",))
        pad = self.pad_token_id
        if pad is not None and (isinstance(pad, bool) or not isinstance(pad, int) or not 0 <= pad < self.vocab_size):
            self.fail("pad_token_id", f"must index the vocabulary (size {self.vocab_size}) or be null")
        if self.extra.get("pool_act", "tanh") != "tanh":  # PaddleNLP's configs name the pooler's activation
            raise ConfigError(f"{self.model_type} config: pool_act={self.extra['pool_act']!r} is not supported "
                              "(the pooler is tanh)")
        if self.extra.get("is_decoder") or self.extra.get("add_cross_attention"):
            raise ConfigError(f"{self.model_type} config: is_decoder/add_cross_attention are not supported "
                              "(encoder only)")
        check_adapter(self)

    @property
    def tie_word_embeddings(self) -> bool:
        """The MLM decoder is the word-embedding matrix (transformers' default) unless the config says false."""
        return bool(self.extra.get("tie_word_embeddings", True))

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def classifier_dropout_prob(self) -> float:
        """Dropout before the classifiers: classifier_dropout, else hidden_dropout_prob (as transformers)."""
        return self.hidden_dropout_prob if self.classifier_dropout is None else self.classifier_dropout


def _shape(layers: int, hidden: int, heads: int, **overrides) -> dict:
    return dict(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads,
                intermediate_size=4 * hidden, **overrides)


# Google's released BERT checkpoints (transformers' bert-base-uncased, bert-large-uncased)
PRESETS = {
    "bert-base-uncased": Preset("bert-base-uncased", "bert", BertConfig(**_shape(12, 768, 12)), "base",
                                "L12 H768 A12, uncased WordPiece vocabulary"),
    "bert-large-uncased": Preset("bert-large-uncased", "bert", BertConfig(**_shape(24, 1024, 16)), "base",
                                 "L24 H1024 A16, uncased WordPiece vocabulary"),
}
