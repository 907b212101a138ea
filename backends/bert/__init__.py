"""BERT (Devlin et al. 2019): config, presets, heads and weight rules; ports in modeling_<fw>.py."""
from ..spec import family_spec
from .config import PRESETS, BertConfig
from .heads import HEADS
from .weights import PORT_RULES, WEIGHTS

SPEC = family_spec("bert", BertConfig, PRESETS, HEADS, WEIGHTS, PORT_RULES, trailing_padding_free=True)
