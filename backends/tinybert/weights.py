"""TinyBERT weights: BERT's tables with the `tinybert.` prefix (PaddleNLP's), a pooler in every head and
`fit_dense`; reading PaddleNLP and Huawei (transformers-style: `bert.` prefix, top-level fit_dense) checkpoints."""
from __future__ import annotations

from ..bert.weights import LINEAR_KERNELS, BertWeights, paddlenlp_rules
from ..weights import Rule, RuleSet, SAME_NAMES, port_rules
from .config import TinyBertConfig
from .heads import HEADS


class TinyBertWeights(BertWeights):
    family = "tinybert"
    config_class = TinyBertConfig
    base_model_prefix = "tinybert."
    head_registry = HEADS
    pooler_heads = tuple(HEADS)  # PaddleNLP's TinyBertModel always has its pooler
    pooled_heads = ("seqcls", "mc")
    tied_aliases = {}

    def base_shapes(self, c, head: str) -> dict:
        p = self.prefix(head)
        return {**super().base_shapes(c, head),
                p + "fit_dense.weight": (c.fit_size, c.hidden_size), p + "fit_dense.bias": (c.fit_size,)}

    def optional_shapes(self, config, head: str) -> dict:
        """Besides the pooler, PaddleNLP's per-layer `fit_denses` (General TinyBERT's students fit every hidden
        state with its own dense): carried by the converters, not used by our ports."""
        p, fit = self.prefix(head), (config.fit_size, config.hidden_size)
        fit_denses = {f"{p}fit_denses.{i}.{part}": shape for i in range(config.num_hidden_layers + 1)
                      for part, shape in (("weight", fit), ("bias", fit[:1]))}
        return {**super().optional_shapes(config, head), **fit_denses}

    def shrink(self, config):
        """BERT's tiny size, fitted to a 24-wide teacher."""
        return super().shrink(config).replace(fit_size=24)


WEIGHTS = TinyBertWeights()
PORT_RULES = port_rules("tinybert", LINEAR_KERNELS)
# PaddleNLP's TinyBertModel also holds `fit_denses` (one per layer, for its "-v2" students): not used by our
# ports (optional parameters of the checkpoint layer's PaddleNLP rules)
PADDLENLP_UNUSED = (r"(tinybert\.)?fit_denses\.\d+\.(weight|bias)",)
CHECKPOINT_RULES = {
    "paddlenlp": paddlenlp_rules("tinybert"),
    # Huawei's TinyBERT (PyTorch): the encoder under `bert.`, fit_dense on the top model
    "huawei": RuleSet([Rule(r"(tinybert\.)?fit_dense\.(weight|bias)", r"fit_dense.\2"),
                       Rule(r"(?:tinybert\.)?((embeddings|encoder|pooler)\..*)", r"bert.\1"),
                       SAME_NAMES], "tinybert Huawei checkpoint"),
}
