"""RoBERTa weights: BERT's tables with the `roberta.` prefix, RoBERTa's heads and padded position table."""
from __future__ import annotations

from ..bert.weights import LINEAR_KERNELS, BertWeights, keras_rules, paddlenlp_rules
from ..weights import port_rules
from .config import RobertaConfig
from .heads import HEADS


class RobertaWeights(BertWeights):
    family = "roberta"
    config_class = RobertaConfig
    base_model_prefix = "roberta."
    head_registry = HEADS
    pooler_heads = ("base", "mc")  # transformers builds the others with add_pooling_layer=False
    pooled_heads = ("mc",)
    tied_aliases = {"lm_head.decoder.weight": "roberta.embeddings.word_embeddings.weight",
                    "lm_head.decoder.bias": "lm_head.bias"}

    def head_shapes(self, c, head: str) -> dict:
        h = c.hidden_size
        if head == "seqcls":
            return {"classifier.dense.weight": (h, h), "classifier.dense.bias": (h,),
                    "classifier.out_proj.weight": (c.num_labels, h), "classifier.out_proj.bias": (c.num_labels,)}
        return super().head_shapes(c, head)

    def lm_shapes(self, c) -> dict:
        h = c.hidden_size
        shapes = {"lm_head.bias": (c.vocab_size,), "lm_head.dense.weight": (h, h), "lm_head.dense.bias": (h,),
                  "lm_head.layer_norm.weight": (h,), "lm_head.layer_norm.bias": (h,)}
        return shapes if c.tie_word_embeddings else {**shapes, "lm_head.decoder.weight": (c.vocab_size, h)}

    def padding_rows(self, config, head: str) -> dict:
        """The position table has a padding row too (padding tokens take position pad_token_id)."""
        return {**super().padding_rows(config, head),
                self.prefix(head) + "embeddings.position_embeddings.weight": config.pad_token_id}


WEIGHTS = RobertaWeights()
PORT_RULES = port_rules("roberta", LINEAR_KERNELS)
CHECKPOINT_RULES = {"paddlenlp": paddlenlp_rules("roberta"), "keras": keras_rules("roberta", "roberta")}
