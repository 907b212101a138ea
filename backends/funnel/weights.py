"""Funnel weights as data: canonical names and shapes, init, port layouts, parity inputs."""
from __future__ import annotations

import numpy as np

from ..spec import token_inputs
from ..weights import port_rules
from .heads import HEADS

HEAD_PREFIX = {"model": "", "base": "", "seqcls": "funnel.", "mc": "funnel.", "qa": "funnel.",
               "pretraining": "funnel.", "mlm": "funnel."}
HEAD_HAS_DECODER = {"model": True, "base": False, "seqcls": False, "mc": False, "qa": True, "pretraining": True,
                    "mlm": True}
# the Linear kernels (port_rules transposes them for frameworks storing [in, out]); lm_head.weight is not one:
# it keeps the [vocab, d_model] layout of the word embeddings it is tied to (or stands in for) in every port and format
LINEAR_WEIGHT = (r"(.*\.(q_head|k_head|v_head|post_proj|linear_1|linear_2|linear_hidden|linear_out)|qa_outputs"
                 r"|discriminator_predictions\.(dense|dense_prediction)"
                 r"|.*\.adapters\.\w+\.(adapter_down\.0|adapter_up))\.weight")  # and the bottleneck adapters'
PORT_RULES = port_rules("funnel", LINEAR_WEIGHT)


def _layer_shapes(prefix: str, c) -> dict:
    inner = c.n_head * c.d_head
    a, f = prefix + "attention.", prefix + "ffn."
    return {
        a + "q_head.weight": (inner, c.d_model),
        a + "k_head.weight": (inner, c.d_model), a + "k_head.bias": (inner,),
        a + "v_head.weight": (inner, c.d_model), a + "v_head.bias": (inner,),
        a + "r_w_bias": (c.n_head, c.d_head), a + "r_r_bias": (c.n_head, c.d_head),
        a + "r_kernel": (c.d_model, c.n_head, c.d_head), a + "r_s_bias": (c.n_head, c.d_head),
        a + "seg_embed": (2, c.n_head, c.d_head),
        a + "post_proj.weight": (c.d_model, inner), a + "post_proj.bias": (c.d_model,),
        a + "layer_norm.weight": (c.d_model,), a + "layer_norm.bias": (c.d_model,),
        f + "linear_1.weight": (c.d_inner, c.d_model), f + "linear_1.bias": (c.d_inner,),
        f + "linear_2.weight": (c.d_model, c.d_inner), f + "linear_2.bias": (c.d_model,),
        f + "layer_norm.weight": (c.d_model,), f + "layer_norm.bias": (c.d_model,),
    }


def param_shapes(config, head: str) -> dict:
    """Canonical (transformers) parameter names and shapes of a head."""
    p = HEAD_PREFIX[head]
    shapes = {
        p + "embeddings.word_embeddings.weight": (config.vocab_size, config.d_model),
        p + "embeddings.layer_norm.weight": (config.d_model,),
        p + "embeddings.layer_norm.bias": (config.d_model,),
    }
    for b, size in enumerate(config.block_sizes):
        for i in range(size):
            shapes.update(_layer_shapes(f"{p}encoder.blocks.{b}.{i}.", config))
    if HEAD_HAS_DECODER[head]:
        for i in range(config.num_decoder_layers):
            shapes.update(_layer_shapes(f"{p}decoder.layers.{i}.", config))
    if head in ("seqcls", "mc"):
        n_out = config.num_labels if head == "seqcls" else 1
        shapes.update({
            "classifier.linear_hidden.weight": (config.d_model, config.d_model),
            "classifier.linear_hidden.bias": (config.d_model,),
            "classifier.linear_out.weight": (n_out, config.d_model),
            "classifier.linear_out.bias": (n_out,),
        })
    if head == "qa":
        shapes.update({"qa_outputs.weight": (2, config.d_model), "qa_outputs.bias": (2,)})
    if head == "pretraining":  # ELECTRA-style discriminator: dense, activation, one score per token
        d = "discriminator_predictions."
        shapes.update({d + "dense.weight": (config.d_model, config.d_model), d + "dense.bias": (config.d_model,),
                       d + "dense_prediction.weight": (1, config.d_model), d + "dense_prediction.bias": (1,)})
    if head == "mlm":  # tied: the word-embedding matrix is the lm_head weight, listed once (as transformers saves it)
        if not config.tie_word_embeddings:
            shapes["lm_head.weight"] = (config.vocab_size, config.d_model)
        shapes["lm_head.bias"] = (config.vocab_size,)
    return shapes


def init_params(config, head: str, rng: np.random.Generator) -> dict:
    """transformers' Funnel init: Linear N(0, sqrt(1/(fan_in+fan_out))) or N(0, initializer_std),
    relative-attention tensors U(0, initializer_range), embeddings N(0, 1 or initializer_std), pad row 0."""
    params = {}
    for name, shape in param_shapes(config, head).items():
        leaf = name.rsplit(".", 1)[-1]
        if name.endswith("word_embeddings.weight"):
            std = 1.0 if config.initializer_std is None else config.initializer_std
            value = rng.normal(0.0, std, shape)
            if config.pad_token_id is not None:
                value[config.pad_token_id] = 0.0
        elif leaf in ("r_w_bias", "r_r_bias", "r_kernel", "r_s_bias", "seg_embed"):
            value = rng.uniform(0.0, config.initializer_range, shape)
        elif "layer_norm" in name:
            value = np.ones(shape) if leaf == "weight" else np.zeros(shape)
        elif leaf == "weight":
            std = np.sqrt(1.0 / (shape[0] + shape[1])) if config.initializer_std is None else config.initializer_std
            value = rng.normal(0.0, std, shape)
        else:
            value = np.zeros(shape)
        params[name] = value
    return params


def model_inputs(config, head: str) -> tuple:
    """input_ids, attention_mask and token_type_ids of the texts tokenised together ([B, choices, T] for mc)."""
    return token_inputs("input_ids", "attention_mask", "token_type_ids", choices=HEADS[head].choices)


def make_inputs(config, head: str, batch: int, seq_len: int, rng: np.random.Generator, num_choices: int = 3) -> dict:
    """input_ids, attention_mask (later rows padded) and token_type_ids (<cls>=2, segments 0 and 1)."""
    lead = (batch, num_choices) if HEADS[head].choices else (batch,)
    ids = rng.integers(1, config.vocab_size, size=lead + (seq_len,), dtype=np.int64)
    mask = np.ones(lead + (seq_len,), dtype=np.int64)
    types = np.zeros(lead + (seq_len,), dtype=np.int64)
    types[..., seq_len // 2:] = 1
    types[..., 0] = 2
    flat_ids, flat_mask = ids.reshape(-1, seq_len), mask.reshape(-1, seq_len)
    for row in range(1, flat_ids.shape[0]):
        pad = min(seq_len - 2, row * max(1, seq_len // 5))
        if pad > 0:
            flat_mask[row, seq_len - pad:] = 0
            if config.pad_token_id is not None:
                flat_ids[row, seq_len - pad:] = config.pad_token_id
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def hidden_state_names(config, head: str) -> list[str]:
    """Readable names of hidden_states in order: embeddings, each encoder layer pass, decoder layers."""
    names = ["embeddings"]
    for b, (size, repeats) in enumerate(zip(config.block_sizes, config.block_repeats)):
        for i in range(size):
            names += [f"encoder.blocks.{b}.{i}" + (f" (repeat {r})" if repeats > 1 else "") for r in range(repeats)]
    if HEAD_HAS_DECODER[head]:
        names.append("decoder.input (upsampled + block 0)")
        names += [f"decoder.layers.{i}" for i in range(config.num_decoder_layers)]
    return names


def shrink(config):
    """The same switches at tiny size: d_model 16, 2 heads, at most 2 layers per block."""
    return config.replace(vocab_size=64, d_model=16, n_head=2, d_head=8, d_inner=32,
                          block_sizes=[min(size, 2) for size in config.block_sizes],
                          num_decoder_layers=min(config.num_decoder_layers, 2))
