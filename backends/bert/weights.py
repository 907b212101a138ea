"""BERT weights as data: canonical names and shapes, init, port layouts, checkpoint names, parity inputs.

`BertWeights` holds a family's tables; RoBERTa and TinyBERT subclass it and change only what differs
(prefix, heads, extra tensors). The module-level names are what `FamilySpec` and the converters use.
"""
from __future__ import annotations

import re

import numpy as np

from ..spec import HeadTable, token_inputs
from ..weights import Rule, RuleSet, port_rules
from .config import BertConfig
from .heads import HEADS


# the Linear kernels of the BERT families (port_rules): every `.weight` but embedding tables and LayerNorm scales
LINEAR_KERNELS = r"(?!.*(_embeddings|LayerNorm|layer_norm)\.weight$).*\.weight"


# PaddleNLP builds the encoder from paddle.nn.TransformerEncoder: canonical layer module -> PaddleNLP name
PADDLENLP_LAYER_LINEARS = {
    r"attention\.self\.query": "self_attn.q_proj", r"attention\.self\.key": "self_attn.k_proj",
    r"attention\.self\.value": "self_attn.v_proj", r"attention\.output\.dense": "self_attn.out_proj",
    r"intermediate\.dense": "linear1", r"output\.dense": "linear2",
}
PADDLENLP_LAYER_NORMS = {r"attention\.output\.LayerNorm": "norm1", r"output\.LayerNorm": "norm2"}


def paddlenlp_rules(family: str) -> RuleSet:
    """Canonical names -> PaddleNLP's (same prefixes; kernels [in, out]; qa_outputs is its `classifier`)."""
    layer = r"(.*)encoder\.layer\.(\d+)\."
    rules = []
    for canonical, paddle_name in PADDLENLP_LAYER_LINEARS.items():
        rules += [Rule(layer + canonical + r"\.weight", rf"\1encoder.layers.\2.{paddle_name}.weight", "transpose"),
                  Rule(layer + canonical + r"\.bias", rf"\1encoder.layers.\2.{paddle_name}.bias")]
    rules += [Rule(layer + canonical + r"\.(weight|bias)", rf"\1encoder.layers.\2.{paddle_name}.\3")
              for canonical, paddle_name in PADDLENLP_LAYER_NORMS.items()]
    rules += [
        Rule(r"(.*)embeddings\.LayerNorm\.(weight|bias)", r"\1embeddings.layer_norm.\2"),
        Rule(r"qa_outputs\.weight", "classifier.weight", "transpose"),
        Rule(r"qa_outputs\.bias", "classifier.bias"),
        # BERT's LM head: `transform` is the Linear itself, its LayerNorm sits beside it, the bias is `decoder_bias`
        Rule(r"cls\.predictions\.transform\.dense\.weight", "cls.predictions.transform.weight", "transpose"),
        Rule(r"cls\.predictions\.transform\.dense\.bias", "cls.predictions.transform.bias"),
        Rule(r"cls\.predictions\.transform\.LayerNorm\.(weight|bias)", r"cls.predictions.layer_norm.\1"),
        Rule(r"cls\.predictions\.bias", "cls.predictions.decoder_bias"),
        # an untied decoder is a TransposedLinear: [vocab, hidden], torch's layout
        Rule(r"(cls\.predictions|lm_head)\.decoder\.weight", r"\g<0>"),
        *port_rules(family, LINEAR_KERNELS)["paddle"].rules,
    ]
    return RuleSet(rules, f"{family} PaddleNLP checkpoint")


def keras_rules(family: str, base: str) -> RuleSet:
    """Canonical names of the base model -> transformers' TF (Keras) weight names below the model scope,
    e.g. `encoder.layer.0.attention.self.query.weight` -> `bert/encoder/layer_._0/attention/self/query/kernel:0`."""
    b = rf"(?:{base}\.)?"
    layer = rf"{b}encoder\.layer\.(\d+)\."
    to_layer = f"{base}/encoder/layer_._\\1/"
    return RuleSet([
        Rule(rf"{b}embeddings\.word_embeddings\.weight", f"{base}/embeddings/word_embeddings/weight:0"),
        Rule(rf"{b}embeddings\.(position|token_type)_embeddings\.weight",
             f"{base}/embeddings/\\1_embeddings/embeddings:0"),
        Rule(rf"{b}embeddings\.LayerNorm\.weight", f"{base}/embeddings/LayerNorm/gamma:0"),
        Rule(rf"{b}embeddings\.LayerNorm\.bias", f"{base}/embeddings/LayerNorm/beta:0"),
        Rule(layer + r"attention\.(self|output)\.(query|key|value|dense)\.weight",
             to_layer + "attention/\\2/\\3/kernel:0", "transpose"),
        Rule(layer + r"attention\.(self|output)\.(query|key|value|dense)\.bias", to_layer + "attention/\\2/\\3/bias:0"),
        Rule(layer + r"(intermediate|output)\.dense\.weight", to_layer + "\\2/dense/kernel:0", "transpose"),
        Rule(layer + r"(intermediate|output)\.dense\.bias", to_layer + "\\2/dense/bias:0"),
        Rule(layer + r"attention\.output\.LayerNorm\.weight", to_layer + "attention/output/LayerNorm/gamma:0"),
        Rule(layer + r"attention\.output\.LayerNorm\.bias", to_layer + "attention/output/LayerNorm/beta:0"),
        Rule(layer + r"output\.LayerNorm\.weight", to_layer + "output/LayerNorm/gamma:0"),
        Rule(layer + r"output\.LayerNorm\.bias", to_layer + "output/LayerNorm/beta:0"),
        Rule(rf"{b}pooler\.dense\.weight", f"{base}/pooler/dense/kernel:0", "transpose"),
        Rule(rf"{b}pooler\.dense\.bias", f"{base}/pooler/dense/bias:0"),
    ], f"{family} transformers TF checkpoint")


class BertWeights(HeadTable):
    """Canonical (transformers state_dict) names, shapes, init, inputs and checkpoint reading of a family."""

    family = "bert"
    config_class = BertConfig
    base_model_prefix = "bert."  # heads hold the base model under this attribute; the base model has no prefix
    head_registry = HEADS  # head -> Head (heads.py)
    # heads whose port builds the pooler (transformers builds the others with add_pooling_layer=False)
    pooler_heads = ("base", "seqcls", "mc", "pretraining")
    # heads whose outputs use the pooler: every other head's checkpoint may hold one or not
    pooled_heads = ("seqcls", "mc", "pretraining")
    # checkpoint name -> the parameter it is tied to: transformers' state_dict lists the MLM decoder twice,
    # its save_pretrained (and our canonical set) once; a checkpoint may carry the alias if it holds the same values
    tied_aliases = {"cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
                    "cls.predictions.decoder.bias": "cls.predictions.bias"}
    # non-parameter tensors (transformers' buffers) that checkpoints may carry; dropped on reading
    buffers = (r"(.*\.)?embeddings\.(position_ids|token_type_ids)",)

    def prefix(self, head: str) -> str:
        return "" if head == "base" else self.base_model_prefix

    def base_shapes(self, c, head: str) -> dict:
        """Embeddings, encoder layers and (for pooler heads) the pooler."""
        p, h = self.prefix(head), c.hidden_size
        shapes = {
            p + "embeddings.word_embeddings.weight": (c.vocab_size, h),
            p + "embeddings.position_embeddings.weight": (c.max_position_embeddings, h),
            p + "embeddings.token_type_embeddings.weight": (c.type_vocab_size, h),
            p + "embeddings.LayerNorm.weight": (h,), p + "embeddings.LayerNorm.bias": (h,),
        }
        for i in range(c.num_hidden_layers):
            layer = f"{p}encoder.layer.{i}."
            for name, (n_out, n_in) in (("attention.self.query", (h, h)), ("attention.self.key", (h, h)),
                                        ("attention.self.value", (h, h)), ("attention.output.dense", (h, h)),
                                        ("intermediate.dense", (c.intermediate_size, h)),
                                        ("output.dense", (h, c.intermediate_size))):
                shapes[layer + name + ".weight"], shapes[layer + name + ".bias"] = (n_out, n_in), (n_out,)
            for name in ("attention.output.LayerNorm", "output.LayerNorm"):
                shapes[layer + name + ".weight"], shapes[layer + name + ".bias"] = (h,), (h,)
        if head in self.pooler_heads:
            shapes.update({p + "pooler.dense.weight": (h, h), p + "pooler.dense.bias": (h,)})
        return shapes

    def head_shapes(self, c, head: str) -> dict:
        h = c.hidden_size
        n_out = {"seqcls": c.num_labels, "tokcls": c.num_labels, "mc": 1}.get(head)
        if n_out:
            return {"classifier.weight": (n_out, h), "classifier.bias": (n_out,)}
        if head == "qa":
            return {"qa_outputs.weight": (2, h), "qa_outputs.bias": (2,)}
        if head == "mlm":
            return self.lm_shapes(c)
        if head == "pretraining":  # BertForPreTraining: the MLM head and the next-sentence classifier
            return {**self.lm_shapes(c), "cls.seq_relationship.weight": (2, h), "cls.seq_relationship.bias": (2,)}
        return {}

    def lm_shapes(self, c) -> dict:
        """The language-model head: transform, output bias and, when untied, its own decoder matrix."""
        t, h = "cls.predictions.transform.", c.hidden_size
        shapes = {"cls.predictions.bias": (c.vocab_size,), t + "dense.weight": (h, h), t + "dense.bias": (h,),
                  t + "LayerNorm.weight": (h,), t + "LayerNorm.bias": (h,)}
        return shapes if c.tie_word_embeddings else {**shapes, "cls.predictions.decoder.weight": (c.vocab_size, h)}

    def param_shapes(self, config, head: str) -> dict:
        """Canonical (transformers) parameter names and shapes of a head (what our port of it holds)."""
        return {**self.base_shapes(config, head), **self.head_shapes(config, head)}

    def optional_shapes(self, config, head: str) -> dict:
        """Parameters a checkpoint of `head` may hold or lack: the pooler of heads that do not use it
        (transformers saves BertModel with or without it and its QA/token/MLM heads without, PaddleNLP
        always builds it)."""
        if head in self.pooled_heads:
            return {}
        p, h = self.prefix(head), config.hidden_size
        return {p + "pooler.dense.weight": (h, h), p + "pooler.dense.bias": (h,)}

    def padding_rows(self, config, head: str) -> dict:
        """Embedding tables with a padding_idx -> that row (zero at init, no gradient), as transformers."""
        if config.pad_token_id is None:
            return {}
        return {self.prefix(head) + "embeddings.word_embeddings.weight": config.pad_token_id}

    def init_params(self, config, head: str, rng: np.random.Generator) -> dict:
        """transformers' BERT init: weights N(0, initializer_range), biases 0, LayerNorm 1 and 0, padding rows 0."""
        params = {}
        for name, shape in self.param_shapes(config, head).items():
            if re.search(r"(LayerNorm|layer_norm)\.weight$", name):
                value = np.ones(shape)
            elif name.endswith("bias"):
                value = np.zeros(shape)
            else:
                value = rng.normal(0.0, config.initializer_range, shape)
            params[name] = value
        for name, row in self.padding_rows(config, head).items():
            params[name][row] = 0.0
        return params

    def token_ids(self, config, shape, rng):
        """Random ids other than the padding id."""
        ids = rng.integers(0, config.vocab_size - 1, size=shape, dtype=np.int64)
        return ids if config.pad_token_id is None else ids + (ids >= config.pad_token_id)

    def model_inputs(self, config, head: str) -> tuple:
        """input_ids, attention_mask and token_type_ids of the texts tokenised together ([B, choices, T] for mc)."""
        return token_inputs("input_ids", "attention_mask", "token_type_ids", choices=head in self.choice_heads)

    def make_inputs(self, config, head: str, batch: int, seq_len: int, rng: np.random.Generator,
                    num_choices: int = 3) -> dict:
        """input_ids, attention_mask and token_type_ids (two segments when the config has them).

        Row 0 is full; later rows are padded, alternately at the end and at the start, with the padding
        id under a zero mask (RoBERTa's positions then skip the padding).
        """
        lead = (batch, num_choices) if head in self.choice_heads else (batch,)
        ids = self.token_ids(config, lead + (seq_len,), rng)
        mask = np.ones(lead + (seq_len,), dtype=np.int64)
        types = np.zeros(lead + (seq_len,), dtype=np.int64)
        if config.type_vocab_size > 1:
            types[..., seq_len // 2:] = 1
        flat_ids, flat_mask = ids.reshape(-1, seq_len), mask.reshape(-1, seq_len)
        for row in range(1, flat_ids.shape[0]):
            pad = min(seq_len - 2, row * max(1, seq_len // 5))
            padded = slice(seq_len - pad, None) if row % 2 else slice(None, pad)
            flat_mask[row, padded] = 0
            if config.pad_token_id is not None:
                flat_ids[row, padded] = config.pad_token_id
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}

    def hidden_state_names(self, config, head: str) -> list[str]:
        return ["embeddings"] + [f"encoder.layer.{i}" for i in range(config.num_hidden_layers)]

    def shrink(self, config):
        """The same switches at tiny size: hidden 16, 2 heads, at most 2 layers, vocabulary 64."""
        return config.replace(vocab_size=64, hidden_size=16, num_attention_heads=2, intermediate_size=32,
                              num_hidden_layers=min(config.num_hidden_layers, 2),
                              max_position_embeddings=min(config.max_position_embeddings, 40))


WEIGHTS = BertWeights()
PORT_RULES = port_rules("bert", LINEAR_KERNELS)
CHECKPOINT_RULES = {"paddlenlp": paddlenlp_rules("bert"), "keras": keras_rules("bert", "bert")}
