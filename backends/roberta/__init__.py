"""RoBERTa (Liu et al. 2019): BERT with padding-aware positions; config, presets, heads, weight rules."""
from ..spec import family_spec
from .config import PRESETS, RobertaConfig
from .heads import HEADS
from .weights import PORT_RULES, WEIGHTS

SPEC = family_spec("roberta", RobertaConfig, PRESETS, HEADS, WEIGHTS, PORT_RULES, trailing_padding_free=True)
