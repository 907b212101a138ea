"""BiLSTM student (Tang et al. 2019): config, presets and weight rules; ports in modeling_<fw>.py."""
from ..spec import FamilySpec
from . import weights
from .config import PRESETS, BiLSTMConfig

SPEC = FamilySpec(
    name="bilstm",
    config_class=BiLSTMConfig,
    presets=PRESETS,
    heads=("seqcls",),
    param_shapes=weights.param_shapes,
    init_params=weights.init_params,
    port_rules=weights.PORT_RULES,
    make_inputs=weights.make_inputs,
    final_outputs=weights.FINAL_OUTPUTS,
    hidden_state_names=weights.hidden_state_names,
    shrink=weights.shrink,
)
