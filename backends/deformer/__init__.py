"""DeFormer-assist (Cao et al. 2020): BERT or RoBERTa layers rewired so that the passage is encoded alone
(cacheable) and the question attends to it; config, presets, heads and weight rules; ports in modeling_<fw>.py."""
from ..spec import family_spec
from .config import PRESETS, DeformerConfig
from .heads import HEADS
from .weights import PORT_RULES, WEIGHTS

SPEC = family_spec("deformer", DeformerConfig, PRESETS, HEADS, WEIGHTS, PORT_RULES, trailing_padding_free=True)
