"""Funnel-Transformer (Dai et al. 2020): config, presets, heads and weight rules; ports in modeling_<fw>.py."""
from ..spec import family_spec
from . import weights
from .config import FunnelConfig, PRESETS
from .heads import HEADS

SPEC = family_spec("funnel", FunnelConfig, PRESETS, HEADS, weights, weights.PORT_RULES)
