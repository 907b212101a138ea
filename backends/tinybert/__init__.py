"""TinyBERT (Jiao et al. 2020): a BERT student with fit_dense; config, presets, heads, weight rules."""
from ..spec import family_spec
from .config import PRESETS, TinyBertConfig
from .heads import HEADS
from .weights import PORT_RULES, WEIGHTS

SPEC = family_spec("tinybert", TinyBertConfig, PRESETS, HEADS, WEIGHTS, PORT_RULES, trailing_padding_free=True)
