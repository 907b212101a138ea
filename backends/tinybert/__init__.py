"""TinyBERT (Jiao et al. 2020): a BERT student with fit_dense; config, presets, weight rules."""
from ..bert import family_spec
from .config import PRESETS, TinyBertConfig
from .weights import PORT_RULES, WEIGHTS

SPEC = family_spec("tinybert", TinyBertConfig, PRESETS, WEIGHTS, PORT_RULES)
