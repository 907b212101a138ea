"""BERT (Devlin et al. 2019): config, presets and weight rules; ports in modeling_<fw>.py."""
from ..spec import FamilySpec
from .config import PRESETS, BertConfig
from .weights import PORT_RULES, WEIGHTS


def family_spec(name, config_class, presets, weights, port_rules) -> FamilySpec:
    """The FamilySpec of a BERT-like family from its `BertWeights` tables (RoBERTa and TinyBERT use it too)."""
    return FamilySpec(
        name=name,
        config_class=config_class,
        presets=presets,
        heads=weights.heads,
        param_shapes=weights.param_shapes,
        init_params=weights.init_params,
        port_rules=port_rules,
        make_inputs=weights.make_inputs,
        final_outputs=weights.final_outputs,
        hidden_state_names=weights.hidden_state_names,
        shrink=weights.shrink,
        choice_heads=weights.choice_heads,
        optional_shapes=weights.optional_shapes,
    )


SPEC = family_spec("bert", BertConfig, PRESETS, WEIGHTS, PORT_RULES)
