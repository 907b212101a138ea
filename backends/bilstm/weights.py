"""BiLSTM weights as data: canonical names and shapes, init, port layouts, parity inputs.

Canonical names are torch's: `nn.LSTM` state_dict names for the BiLSTM (gates i, f, g, o stacked
along dim 0; two bias vectors), `nn.Linear` names for the rest.
"""
from __future__ import annotations

import numpy as np

from ..spec import token_inputs
from ..weights import Rule, port_rules

LSTM_DIRECTIONS = ("", "_reverse")
LINEAR_WEIGHT = r"(fc|classifier)\.weight"
LSTM_WEIGHT = r"lstm\.weight_(ih|hh)_l0(_reverse)?"
LSTM_BIAS = r"lstm\.bias_(ih|hh)_l0(_reverse)?"

# the paddle LSTM keeps torch's names, [4h, in] layout and gate order: only the Linear kernels differ
PORT_RULES = port_rules("bilstm", LINEAR_WEIGHT, own_rows={"tf": [
    # Keras LSTMCell: kernel [in, 4h], recurrent_kernel [h, 4h]; its gates i, f, c, o are torch's i, f, g, o
    Rule(LSTM_WEIGHT, r"\g<0>", "transpose"),
    # Keras' one bias is named by both torch biases (modeling_tf.LSTM.named_parameters): loading sums
    # them; reading it back gives it whole to bias_ih and zeros to bias_hh; its gradient is both biases'
    Rule(LSTM_BIAS, r"\g<0>", "identity"),
]})


def _lstm_shapes(config) -> dict:
    """torch `nn.LSTM(embedding_dim, hidden_size, bidirectional=True)` parameters."""
    gates, h = 4 * config.hidden_size, config.hidden_size
    shapes = {}
    for suffix in LSTM_DIRECTIONS:
        shapes.update({
            f"lstm.weight_ih_l0{suffix}": (gates, config.embedding_dim),
            f"lstm.weight_hh_l0{suffix}": (gates, h),
            f"lstm.bias_ih_l0{suffix}": (gates,),
            f"lstm.bias_hh_l0{suffix}": (gates,),
        })
    return shapes


def param_shapes(config, head: str = "seqcls") -> dict:
    """Canonical parameter names and shapes."""
    return {
        "embedding.weight": (config.vocab_size, config.embedding_dim),
        **_lstm_shapes(config),
        "fc.weight": (config.fc_hidden_size, config.features_size),
        "fc.bias": (config.fc_hidden_size,),
        "classifier.weight": (config.num_labels, config.fc_hidden_size),
        "classifier.bias": (config.num_labels,),
    }


def parameter_count(config, embeddings: bool = True) -> int:
    """Number of parameters, as torch counts them (both LSTM bias vectors)."""
    return sum(int(np.prod(shape)) for name, shape in param_shapes(config).items()
               if embeddings or name != "embedding.weight")


def init_params(config, head: str, rng: np.random.Generator) -> dict:
    """Embeddings U(-0.25, 0.25) with a zero padding row (the authors' random init); torch's defaults
    elsewhere: LSTM U(-1/sqrt(h), 1/sqrt(h)), Linear weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    shapes = param_shapes(config, head)
    params = {}
    for name, shape in shapes.items():
        if name == "embedding.weight":
            value = rng.uniform(-0.25, 0.25, shape)
            if config.padding_idx is not None:
                value[config.padding_idx] = 0.0
        elif name.startswith("lstm."):
            bound = 1.0 / np.sqrt(config.hidden_size)
            value = rng.uniform(-bound, bound, shape)
        else:
            fan_in = shapes[name.rsplit(".", 1)[0] + ".weight"][1]
            value = rng.uniform(-1.0 / np.sqrt(fan_in), 1.0 / np.sqrt(fan_in), shape)
        params[name] = value
    return params


def _sentences(config, batch: int, seq_len: int, rng: np.random.Generator, lengths: list) -> tuple:
    """Right-padded ids and mask; padded positions hold padding_idx (or 0 without one)."""
    ids = rng.integers(1, config.vocab_size, size=(batch, seq_len), dtype=np.int64)
    mask = (np.arange(seq_len)[None, :] < np.asarray(lengths)[:, None]).astype(np.int64)
    ids[mask == 0] = config.padding_idx or 0
    return ids, mask


def model_inputs(config, head: str = "seqcls") -> tuple:
    """input_ids and attention_mask; a pair config (Tang et al.'s siamese student) reads each sentence on its
    own: input_ids/attention_mask of the first, input_ids_b/attention_mask_b of the second. A single-sentence
    config given a sentence pair reads the two tokenised together."""
    if not config.pair:
        return token_inputs("input_ids", "attention_mask")
    return token_inputs("input_ids", "attention_mask", text="a") + token_inputs(
        "input_ids", "attention_mask", text="b", suffix="_b")


def make_inputs(config, head: str, batch: int, seq_len: int, rng: np.random.Generator) -> dict:
    """input_ids and attention_mask, right-padded: full length, length 1, then lengths spread in between
    (in reverse order for input_ids_b/attention_mask_b of a pair config)."""
    between = np.linspace(2, seq_len - 1, max(batch - 2, 0)).round().astype(int).clip(1, seq_len)
    lengths = ([seq_len, 1] + between.tolist())[:batch]
    ids, mask = _sentences(config, batch, seq_len, rng, lengths)
    inputs = {"input_ids": ids, "attention_mask": mask}
    if config.pair:
        inputs["input_ids_b"], inputs["attention_mask_b"] = _sentences(config, batch, seq_len, rng, lengths[::-1])
    return inputs


def hidden_state_names(config, head: str = "seqcls") -> list[str]:
    """Per sentence: the BiLSTM outputs at every position and the sentence vector; then the ReLU layer."""
    names = []
    for sentence in ("a", "b") if config.pair else ("a",):
        names += [f"lstm outputs (sentence {sentence})", f"sentence vector (sentence {sentence})"]
    return names + ["fc"]


def shrink(config):
    """The same switches at tiny size."""
    return config.replace(vocab_size=32, embedding_dim=6, hidden_size=5, fc_hidden_size=7,
                          padding_idx=None if config.padding_idx is None else 0)
