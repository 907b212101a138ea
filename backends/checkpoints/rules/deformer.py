"""DeFormer checkpoints are their base family's: BERT's or RoBERTa's names and layouts in every format, the base
family's classes (transformers' BertForQuestionAnswering, PaddleNLP's RobertaForMultipleChoice, ...), and
config.json with the base's model_type plus "parity_family": "deformer" and the split keys (DeformerConfig.to_dict).

The base family is in the config: `rules_for_config` gives the base's rules for the DeFormer's heads; `FORMATS`
(BERT's) serve only to read a checkpoint's config before its base family is known.
"""
from dataclasses import replace

from backends.deformer.heads import HEADS

from . import FormatRules, format_rules

FORMATS_OF_BASE = ("hf", "tf", "paddle")  # every format both base families are stored in


def rules_for_config(config, fmt: str) -> FormatRules:
    """The base family's rules for `fmt`, with its classes of the DeFormer's heads."""
    return _heads_only(format_rules(config.base_family, fmt))


def _heads_only(rules: FormatRules) -> FormatRules:
    return replace(rules, classes={head: name for head, name in rules.classes.items() if head in HEADS},
                   default_head=None)


FORMATS = {fmt: _heads_only(format_rules("bert", fmt)) for fmt in FORMATS_OF_BASE}
