"""DeformerConfig: a BERT or RoBERTa config plus the DeFormer split of its layers, framework-free, and presets.

DeFormer (Cao et al. 2020) with assist layers: of the base model's N layers, the first E2 + A encode the
passage alone (question-independent, cacheable) and the question alone (E2 question-only layers) or with
the passage's states as extra keys and values (A assist layers); the last E3 layers run over the joint
[question; passage] sequence. E2 = A = 0 is the base model on the concatenation.

config.json holds the base family's keys and model_type ("bert"/"roberta"), "parity_family": "deformer"
and base_family, encoder2_layers, assist_layers, encoder3_layers and max_question_length.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..bert.config import BertConfig
from ..config_base import check_choice, check_positive_int
from ..errors import ConfigError
from ..roberta.config import PRESETS as ROBERTA_PRESETS, RobertaConfig
from ..spec import Preset

FAMILY = "deformer"
FAMILY_KEY = "parity_family"  # backends.FAMILY_KEY (not imported: backends/__init__ discovers this package)
# base family -> its config class (the DeFormer's fields are that class's plus the split)
BASE_CONFIGS = {"bert": BertConfig, "roberta": RobertaConfig}
SPLIT_KEYS = ("encoder2_layers", "assist_layers", "encoder3_layers")
DEFORMER_KEYS = ("base_family", *SPLIT_KEYS, "max_question_length")


@dataclass
class DeformerConfig(BertConfig):
    """BERT's fields (RoBERTa's are the same fields with other defaults; a RoBERTa-based config is made from a
    RobertaConfig by `from_base_config`), the base family and the split. encoder3_layers None: the layers left."""

    model_type = FAMILY  # the class's own; config.json carries the base's (to_dict), which from_dict reads

    base_family: str = "bert"
    encoder2_layers: int = 0
    assist_layers: int = 0
    encoder3_layers: int | None = None
    max_question_length: int = 64

    def __post_init__(self):
        if self.encoder3_layers is None and _is_count(self.encoder2_layers) and _is_count(self.assist_layers) \
                and isinstance(self.num_hidden_layers, int):
            self.encoder3_layers = self.num_hidden_layers - self.encoder2_layers - self.assist_layers
        super().__post_init__()

    def validate(self):
        check_choice(self, "base_family", tuple(BASE_CONFIGS))
        self.base_config()  # the base family's own checks, naming the key ("roberta config: pad_token_id=...")
        for key in SPLIT_KEYS:
            if not _is_count(getattr(self, key)):
                self.fail(key, "must be an integer >= 0")
        if sum(getattr(self, key) for key in SPLIT_KEYS) != self.num_hidden_layers:
            self.fail("encoder3_layers", f"with encoder2_layers={self.encoder2_layers} and assist_layers="
                                         f"{self.assist_layers} must add up to num_hidden_layers="
                                         f"{self.num_hidden_layers}")
        check_positive_int(self, "max_question_length")
        if self.max_question_length >= self.max_positions:
            self.fail("max_question_length", f"must leave passage positions: below the {self.max_positions} "
                                             f"positions of max_position_embeddings={self.max_position_embeddings}")

    def fail(self, key: str, message: str):
        raise ConfigError(f"{FAMILY} config: {key}={getattr(self, key, None)!r} {message}")

    @property
    def base_model_type(self) -> str:
        return BASE_CONFIGS[self.base_family].model_type

    @property
    def base_model_prefix(self) -> str:
        """The attribute, and canonical-name prefix, of the body in task heads: the base family's (`bert`)."""
        return self.base_family

    @property
    def position_offset(self) -> int:
        """The first position id: RoBERTa counts positions from pad_token_id + 1, BERT from 0."""
        return self.pad_token_id + 1 if self.base_family == "roberta" else 0

    @property
    def max_positions(self) -> int:
        """Position ids available to question and passage together (the question's max_question_length first)."""
        return self.max_position_embeddings - self.position_offset

    @property
    def passage_layers(self) -> int:
        """Layers that encode the passage alone: E2 + A (its cached states are their inputs and outputs)."""
        return self.encoder2_layers + self.assist_layers

    @property
    def split(self) -> str:
        return f"{self.encoder2_layers}/{self.assist_layers}/{self.encoder3_layers}"

    def base_fields(self) -> dict:
        names = {f.name for f in dataclasses.fields(BertConfig)}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name in names}

    def base_config(self) -> BertConfig:
        """The base family's config (BertConfig or RobertaConfig) with the same values: its layers, weights
        and checkpoints are the DeFormer's."""
        return BASE_CONFIGS[self.base_family](**self.base_fields())

    def to_dict(self) -> dict:
        """The base's config.json keys and model_type, the family key and the DeFormer's keys."""
        return {**super().to_dict(), "model_type": self.base_model_type, FAMILY_KEY: FAMILY}

    @classmethod
    def from_dict(cls, data: dict, source: str = "config"):
        """A DeFormer's config.json, or a BERT/RoBERTa one (the base model: split 0/0/N): the base family's
        reading (its defaults and key aliases), then the DeFormer's keys."""
        data = dict(data)
        data.pop(FAMILY_KEY, None)
        model_type = data.get("model_type")
        by_type = {config.model_type: name for name, config in BASE_CONFIGS.items()}
        base_family = data.pop("base_family", by_type.get(model_type, "bert"))
        if base_family not in BASE_CONFIGS:
            raise ConfigError(f"{source}: base_family={base_family!r} must be one of {', '.join(BASE_CONFIGS)}")
        if model_type not in (None, FAMILY, BASE_CONFIGS[base_family].model_type):
            raise ConfigError(f"{source}: model_type is {model_type!r}, expected "
                              f"{BASE_CONFIGS[base_family].model_type!r} (base_family={base_family!r})")
        data["model_type"] = BASE_CONFIGS[base_family].model_type
        split = {key: data.pop(key) for key in DEFORMER_KEYS[1:] if key in data}
        base = BASE_CONFIGS[base_family].from_dict(data, source)
        try:
            return from_base_config(base, **split)
        except TypeError as exc:
            raise ConfigError(f"{source}: {exc}") from None


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def from_base_config(base_config: BertConfig, encoder2_layers: int = 0, assist_layers: int = 0,
                     encoder3_layers: int | None = None, max_question_length: int = 64) -> DeformerConfig:
    """A DeformerConfig from a BertConfig or RobertaConfig (e.g. a checkpoint's) and the split; encoder3_layers
    None: the layers left. Bad values are a ConfigError naming the key."""
    base_family = {config: name for name, config in BASE_CONFIGS.items()}.get(type(base_config))
    if base_family is None:
        raise ConfigError(f"{FAMILY} config: base config {type(base_config).__name__} is not one of "
                          f"{', '.join(c.__name__ for c in BASE_CONFIGS.values())}")
    fields = {f.name: getattr(base_config, f.name) for f in dataclasses.fields(BertConfig)}
    return DeformerConfig(**fields, base_family=base_family, encoder2_layers=encoder2_layers,
                          assist_layers=assist_layers, encoder3_layers=encoder3_layers,
                          max_question_length=max_question_length)


# MiniLM-L6 (sentence-transformers' all-MiniLM-L6-v2: BERT L6 H384 A12 I1536, uncased WordPiece vocabulary)
MINILM_L6 = BertConfig(num_hidden_layers=6, hidden_size=384, num_attention_heads=12, intermediate_size=1536)


def _preset(base_name: str, base: BertConfig, e2: int, a: int, e3: int, what: str) -> Preset:
    name = f"{FAMILY}-{base_name}-{e2}-{a}-{e3}"
    return Preset(name, FAMILY, from_base_config(base, e2, a, e3), "qa",
                  f"{what}, split {e2}/{a}/{e3} (question-only/assist/joint layers), SQuAD span head")


# the DeFormer paper's splits of roberta-large, and the same ideas on MiniLM-L6 (the suite's real checkpoint)
PRESETS = {p.name: p for p in [
    *(_preset("roberta-large", ROBERTA_PRESETS["roberta-large"].config, *split, "roberta-large shape")
      for split in ((0, 0, 24), (0, 12, 12), (0, 23, 1))),
    *(_preset("minilm", MINILM_L6, *split, "MiniLM-L6 shape (BERT L6 H384 A12)") for split in ((0, 0, 6), (0, 3, 3),
                                                                                               (0, 5, 1))),
]}
