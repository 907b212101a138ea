"""DeFormer weights as data: exactly the base family's (BERT's or RoBERTa's) names, shapes, init and port
layouts (a DeFormer has no weights of its own: it rewires the base's layers); its own inputs (question and
passage apart) and parity inputs with ragged question and passage lengths.
"""
from __future__ import annotations

import numpy as np

from ..bert.weights import LINEAR_KERNELS, WEIGHTS as BERT_WEIGHTS
from ..roberta.weights import WEIGHTS as ROBERTA_WEIGHTS
from ..spec import HeadTable, token_inputs
from ..weights import port_rules
from .config import from_base_config
from .heads import HEADS

BASE_WEIGHTS = {"bert": BERT_WEIGHTS, "roberta": ROBERTA_WEIGHTS}
FEATURES = ("input_ids", "attention_mask", "token_type_ids")
PARTS = ("question", "passage")  # the two parts of the input, in forward() order; text "a" and "b"
# tiny configs (shrink): each part of the split keeps at most this many layers, the question at most this length
TINY_PART_LAYERS = 2
TINY_QUESTION_LENGTH = 8
# and keep positions for joint sequences of this length (parity compare's default --seq-len runs with --tiny)
TINY_JOINT_LENGTH = 128


class DeformerWeights(HeadTable):
    """The base family's tables (by config.base_family) and the DeFormer's inputs."""

    family = "deformer"
    head_registry = HEADS

    @staticmethod
    def base(config):
        """The base family's weights tables (BertWeights or RobertaWeights)."""
        return BASE_WEIGHTS[config.base_family]

    def param_shapes(self, config, head: str) -> dict:
        return self.base(config).param_shapes(config, head)

    def optional_shapes(self, config, head: str) -> dict:
        return self.base(config).optional_shapes(config, head)

    def init_params(self, config, head: str, rng: np.random.Generator) -> dict:
        return self.base(config).init_params(config, head, rng)

    def model_inputs(self, config, head: str) -> tuple:
        """question_input_ids, question_attention_mask, question_token_type_ids ("[CLS] q [SEP]", text "a"), then
        passage_... ("p [SEP]", text "b"); [B, choices, T] for mc."""
        choices = head in self.choice_heads
        return tuple(spec for part, text in zip(PARTS, ("a", "b"))
                     for spec in token_inputs(*FEATURES, choices=choices, prefix=f"{part}_",
                                              text=text))

    @staticmethod
    def part_lengths(config, seq_len: int) -> tuple[int, int]:
        """(Tq, Tp) for a joint length: the question a third (at most max_question_length), shortened further when
        the passage's positions (from max_question_length on) would not fit the position table."""
        question = min(config.max_question_length, max(1, seq_len // 3))
        question = max(question, config.max_question_length + seq_len - config.max_positions)
        if not 1 <= question < seq_len or question > config.max_question_length:
            raise ValueError(f"deformer: a joint length of {seq_len} does not split into a question of at most "
                             f"{config.max_question_length} and a passage within {config.max_positions} positions")
        return question, seq_len - question

    def make_inputs(self, config, head: str, batch: int, seq_len: int, rng: np.random.Generator,
                    num_choices: int = 3) -> dict:
        """Question and passage ids, masks and token types, Tq + Tp = seq_len (part_lengths), padded at their ends
        with the padding id under a zero mask, ragged: row by row the question is full, half, one short, ... and
        the passage a third, one short, full, ... (each row padded in one part or both)."""
        lead = (batch, num_choices) if head in self.choice_heads else (batch,)
        rows = int(np.prod(lead))
        inputs = {}
        for part, length, lengths in zip(PARTS, self.part_lengths(config, seq_len), (
                lambda n: [n, max(1, n // 2), max(1, n - 1)], lambda n: [max(1, n // 3), max(1, n - 1), n])):
            kept = np.array([lengths(length)[row % 3] for row in range(rows)])
            mask = (np.arange(length)[None, :] < kept[:, None]).astype(np.int64)
            ids = self.base(config).token_ids(config, (rows, length), rng)
            if config.pad_token_id is not None:
                ids[mask == 0] = config.pad_token_id
            types = np.full((rows, length), int(part == "passage" and config.type_vocab_size > 1), dtype=np.int64)
            for feature, array in zip(FEATURES, (ids, mask, types)):
                inputs[f"{part}_{feature}"] = array.reshape(lead + (length,))
        return inputs

    def hidden_state_names(self, config, head: str) -> list[str]:
        """The joint [question; passage] states: embeddings, then each layer with its kind."""
        kinds = (["question-only"] * config.encoder2_layers + ["assist"] * config.assist_layers
                 + ["joint"] * config.encoder3_layers)
        return ["embeddings"] + [f"encoder.layer.{i} ({kind})" for i, kind in enumerate(kinds)]

    def shrink(self, config):
        """The base family's tiny config, each part of the split cut to at most TINY_PART_LAYERS layers (a part
        that is there stays), the question to at most TINY_QUESTION_LENGTH, positions for TINY_JOINT_LENGTH tokens."""
        parts = [min(getattr(config, key), TINY_PART_LAYERS)
                 for key in ("encoder2_layers", "assist_layers", "encoder3_layers")]
        positions = min(config.max_position_embeddings, TINY_JOINT_LENGTH + config.position_offset)
        base = self.base(config).shrink(config.base_config()).replace(num_hidden_layers=sum(parts),
                                                                      max_position_embeddings=positions)
        return from_base_config(base, *parts, max_question_length=min(config.max_question_length,
                                                                       TINY_QUESTION_LENGTH))


WEIGHTS = DeformerWeights()
PORT_RULES = port_rules("deformer", LINEAR_KERNELS)


def joint_inputs(config, inputs: dict) -> dict:
    """The base model's inputs equal to a DeFormer's (numpy, [..., Tq + Tp]): ids, masks and token types of
    [question; passage] concatenated, and their position_ids (the question's from 0, the passage's from
    max_question_length; RoBERTa's counted over the mask from pad_token_id + 1, padding at pad_token_id). At split
    0/0/N the base family's model on these computes what the DeFormer computes."""
    joint = {feature: np.concatenate([inputs[f"{part}_{feature}"] for part in PARTS], axis=-1) for feature in FEATURES}
    positions = []
    for part, first in zip(PARTS, (0, config.max_question_length)):
        mask = np.asarray(inputs[f"{part}_attention_mask"], dtype=np.int64)
        if config.base_family == "roberta":
            positions.append((np.cumsum(mask, axis=-1) + first) * mask + config.pad_token_id)
        else:
            positions.append(np.broadcast_to(first + np.arange(mask.shape[-1]), mask.shape))
    return {**joint, "position_ids": np.concatenate(positions, axis=-1)}
