"""TinyBERT weights: BERT's tables with the `tinybert.` prefix (PaddleNLP's), a pooler in every head and
`fit_dense`; reading PaddleNLP and Huawei (transformers-style: `bert.` prefix, top-level fit_dense) checkpoints."""
from __future__ import annotations

from ..bert.weights import BertWeights, paddlenlp_rules, port_rules
from ..weights import Rule, RuleSet, SAME_NAMES
from .config import TinyBertConfig
from .heads import HEADS


class TinyBertWeights(BertWeights):
    family = "tinybert"
    config_class = TinyBertConfig
    base_model_prefix = "tinybert."
    head_registry = HEADS
    pooler_heads = tuple(HEADS)  # PaddleNLP's TinyBertModel always has its pooler
    tied_aliases = {}

    def base_shapes(self, c, head: str) -> dict:
        p = self.prefix(head)
        return {**super().base_shapes(c, head),
                p + "fit_dense.weight": (c.fit_size, c.hidden_size), p + "fit_dense.bias": (c.fit_size,)}

    def shrink(self, config):
        """BERT's tiny size, fitted to a 24-wide teacher."""
        return super().shrink(config).replace(fit_size=24)


WEIGHTS = TinyBertWeights()
PORT_RULES = port_rules("tinybert")
# PaddleNLP's TinyBertModel also holds `fit_denses` (one per layer, for its "-v2" students): not modeled here,
# so reading its checkpoints needs allow_unexpected=PADDLENLP_UNUSED
PADDLENLP_UNUSED = (r"(tinybert\.)?fit_denses\.\d+\.(weight|bias)",)
CHECKPOINT_RULES = {
    "paddlenlp": paddlenlp_rules("tinybert"),
    # Huawei's TinyBERT (PyTorch): the encoder under `bert.`, fit_dense on the top model
    "huawei": RuleSet([Rule(r"(tinybert\.)?fit_dense\.(weight|bias)", r"fit_dense.\2"),
                       Rule(r"(?:tinybert\.)?((embeddings|encoder|pooler)\..*)", r"bert.\1"),
                       SAME_NAMES], "tinybert Huawei checkpoint"),
}
