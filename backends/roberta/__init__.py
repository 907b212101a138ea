"""RoBERTa (Liu et al. 2019): BERT with padding-aware positions; config, presets, weight rules."""
from ..bert import family_spec
from .config import PRESETS, RobertaConfig
from .weights import PORT_RULES, WEIGHTS

SPEC = family_spec("roberta", RobertaConfig, PRESETS, WEIGHTS, PORT_RULES)
