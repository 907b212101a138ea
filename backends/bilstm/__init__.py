"""BiLSTM student (Tang et al. 2019): config, presets, heads and weight rules; ports in modeling_<fw>.py."""
from ..spec import family_spec
from . import weights
from .config import BiLSTMConfig, PRESETS
from .heads import HEADS

# trains_trimmed: the LSTM never runs a padded step (packed in torch, state kept in the ports), its one dropout acts on
# the [rows, fc] sentence features and its head's losses read the logits alone
SPEC = family_spec("bilstm", BiLSTMConfig, PRESETS, HEADS, weights, weights.PORT_RULES, trailing_padding_free=True,
                   trains_trimmed=True)
