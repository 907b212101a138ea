"""Funnel-Transformer (Dai et al. 2020): config, presets and weight rules; ports in modeling_<fw>.py."""
from ..spec import FamilySpec
from . import weights
from .config import PRESETS, FunnelConfig

SPEC = FamilySpec(
    name="funnel",
    config_class=FunnelConfig,
    presets=PRESETS,
    heads=("model", "base", "seqcls", "qa", "mc", "pretraining", "mlm"),
    param_shapes=weights.param_shapes,
    init_params=weights.init_params,
    port_rules=weights.PORT_RULES,
    make_inputs=weights.make_inputs,
    final_outputs=weights.FINAL_OUTPUTS,
    hidden_state_names=weights.hidden_state_names,
    shrink=weights.shrink,
    choice_heads=("mc",),
)
