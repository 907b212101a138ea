"""BiLSTM student (Tang et al. 2019): config, presets, heads and weight rules; ports in modeling_<fw>.py."""
from ..spec import family_spec
from . import weights
from .config import BiLSTMConfig, PRESETS
from .heads import HEADS

SPEC = family_spec("bilstm", BiLSTMConfig, PRESETS, HEADS, weights, weights.PORT_RULES, trailing_padding_free=True)
