"""Features of a model that reads one text pair as two separate parts (the DeFormer family: question, passage).

A base model reads a pair tokenised together, "[CLS] q [SEP] p [SEP]" (RoBERTa "<s> q </s></s> p </s>"). A
split-pair model reads the same tokens cut at the end of the question: the question part "[CLS] q [SEP]" and
the passage part "p [SEP]" (RoBERTa "<s> q </s>" and "</s> p </s>"), each padded at its own end, with the
token types the tokenizer gives each text in the pair. `PartLayout` reads where a tokenizer puts its special
tokens from the tokenizer itself, so the concatenation of the two unpadded parts is exactly the base model's
pair encoding (ids and token types).

The model's InputSpecs (backends/spec.py) say which arrays it reads: text "a" is the question part, text
"b" the passage part. A model reads split pairs when its config has `max_question_length` (the limit of the
question part's positions; backends/deformer) and its inputs are computed from the texts "a" and "b".

- SQuAD: sliding windows over the passage alone (`max_seq_length` tokens per passage part, `doc_stride`
  tokens shared by consecutive windows), the question cut at `max_query_length` tokens; an offset mapping
  over the joint sequence [question part; passage part] (padding included) maps span logits back to
  passage characters; unanswerable questions and answers outside a window point at the question's first
  token (the base model's CLS).
- RACE and BoolQ: one question part (RACE: the question with its option, per choice) and one passage part
  (the article or passage, cut at `max_seq_length` tokens) per example.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tasks.data.features import TOKEN_FEATURES, require_fast

TEXTS = ("a", "b")  # the question part, the passage part (InputSpec.text)


class EmptyPassage(ValueError):
    """A passage with no tokens: a split-pair model has nothing to encode (the task names the file)."""


def reads_split_pair(config, inputs) -> bool:
    """Whether a model with `config` reading `inputs` (InputSpecs) takes one pair as question and passage parts."""
    return getattr(config, "max_question_length", None) is not None and inputs is not None \
        and {spec.text for spec in inputs} == set(TEXTS)


@dataclass(frozen=True)
class PartLayout:
    """The special tokens (ids, token types) around each part, and the token type of each text's own tokens."""

    question_prefix: tuple
    question_suffix: tuple
    passage_prefix: tuple
    passage_suffix: tuple
    question_type: int
    passage_type: int
    pad_id: int
    pad_type: int

    @classmethod
    def from_tokenizer(cls, tokenizer) -> "PartLayout":
        """Read the layout from the tokenizer's pair encoding of two one-token texts and its single-text encoding
        (how many special tokens close a question on its own)."""
        require_fast(tokenizer)
        pair = tokenizer("a", "b", return_token_type_ids=True)
        sequence = pair.sequence_ids()
        ids, types = pair["input_ids"], pair["token_type_ids"]
        single = tokenizer("a").sequence_ids()
        closing = len(single) - 1 - max(i for i, s in enumerate(single) if s == 0)  # specials after the question
        first_a, last_a = sequence.index(0), max(i for i, s in enumerate(sequence) if s == 0)
        first_b, last_b = sequence.index(1), max(i for i, s in enumerate(sequence) if s == 1)
        specials = lambda start, stop: tuple(zip(ids[start:stop], types[start:stop]))  # noqa: E731
        layout = cls(specials(0, first_a), specials(last_a + 1, last_a + 1 + closing),
                     specials(last_a + 1 + closing, first_b), specials(last_b + 1, len(ids)),
                     types[first_a], types[first_b], tokenizer.pad_token_id, tokenizer.pad_token_type_id)
        alone = tokenizer("a", return_token_type_ids=True)["input_ids"]
        question_specials = [i for i, _ in layout.question_prefix + layout.question_suffix]
        if question_specials != alone[:first_a] + alone[len(alone) - closing:]:
            raise ValueError(f"{type(tokenizer).__name__}: the question's special tokens differ between a pair and a "
                             "single text; the pair cannot be split into a question part and a passage part")
        return layout

    @property
    def question_specials(self) -> int:
        return len(self.question_prefix) + len(self.question_suffix)

    @property
    def passage_specials(self) -> int:
        return len(self.passage_prefix) + len(self.passage_suffix)

    def part(self, text: str, tokens: Sequence[int]) -> tuple[list, list]:
        """(ids, token types) of the question part ("a") or the passage part ("b") around `tokens`."""
        prefix, suffix, kind = ((self.question_prefix, self.question_suffix, self.question_type) if text == "a"
                                else (self.passage_prefix, self.passage_suffix, self.passage_type))
        ids = [i for i, _ in prefix] + list(tokens) + [i for i, _ in suffix]
        types = [t for _, t in prefix] + [kind] * len(tokens) + [t for _, t in suffix]
        return ids, types

    def pad(self, parts: Sequence[tuple[list, list]]) -> dict[str, np.ndarray]:
        """input_ids, token_type_ids, attention_mask [n, longest part], each part padded at its end."""
        width = max(len(ids) for ids, _ in parts)
        arrays = {"input_ids": np.full((len(parts), width), self.pad_id, dtype=np.int64),
                  "token_type_ids": np.full((len(parts), width), self.pad_type, dtype=np.int64),
                  "attention_mask": np.zeros((len(parts), width), dtype=np.int64)}
        for row, (ids, types) in enumerate(parts):
            arrays["input_ids"][row, :len(ids)] = ids
            arrays["token_type_ids"][row, :len(ids)] = types
            arrays["attention_mask"][row, :len(ids)] = 1
        return arrays


def token_feature(spec) -> str:
    """The tokenizer feature an InputSpec of a part holds (its `feature`, checked)."""
    if spec.feature in TOKEN_FEATURES:
        return spec.feature
    raise ValueError(f"input {spec.name}: no tokenizer feature {spec.feature!r}; features: {', '.join(TOKEN_FEATURES)}")


def named_inputs(parts: dict, inputs, leading: tuple = ()) -> dict[str, np.ndarray]:
    """The arrays `inputs` (InputSpecs) declare from {"a": question arrays, "b": passage arrays}, reshaped to
    `leading` + (width,) (RACE: (examples, choices))."""
    named = {}
    for spec in inputs:
        array = parts[spec.text][token_feature(spec)]
        named[spec.name] = array.reshape(*leading, array.shape[-1]).astype(spec.dtype, copy=False) if leading \
            else array.astype(spec.dtype, copy=False)
    return named


def tokens_of(tokenizer, texts: Sequence[str], offsets: bool = False):
    """Token ids (and character offsets) of each text alone, without special tokens."""
    encoded = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=offsets)
    return (encoded["input_ids"], encoded["offset_mapping"]) if offsets else encoded["input_ids"]


def check_passages(tokens: Sequence[list], names: Sequence[str]) -> None:
    """EmptyPassage naming the first example whose passage has no tokens."""
    for ids, name in zip(tokens, names):
        if not ids:
            raise EmptyPassage(f"{name}: the passage is empty (no tokens); a split-pair model needs a passage to "
                               "encode")


def pair_parts(tokenizer, questions: Sequence[str], passages: Sequence[str], names: Sequence[str],
               max_query_length: int, max_seq_length: int) -> dict:
    """{"a": question part arrays, "b": passage part arrays} of one (question, passage) pair per row: the question
    cut at max_query_length tokens, the passage part at max_seq_length tokens (its special tokens included)."""
    layout = PartLayout.from_tokenizer(tokenizer)
    passage_tokens = tokens_of(tokenizer, passages)
    check_passages(passage_tokens, names)
    room = max_seq_length - layout.passage_specials
    if room < 1:
        raise ValueError(f"--max-seq-length {max_seq_length} leaves no room for passage tokens")
    return {"a": layout.pad([layout.part("a", ids[:max_query_length])
                             for ids in tokens_of(tokenizer, questions)]),
            "b": layout.pad([layout.part("b", ids[:room]) for ids in passage_tokens])}


def window_starts(length: int, room: int, stride: int) -> list[int]:
    """Token starts of the windows of `room` tokens over `length` tokens, consecutive windows sharing `stride`
    tokens, the last one reaching the end (transformers' overflowing tokens)."""
    starts = [0]
    while starts[-1] + room < length:
        starts.append(starts[-1] + room - stride)
    return starts


@dataclass(frozen=True)
class SquadWindows:
    """What squad_split_features makes: the parts' arrays, each window's example, offsets over the joint
    sequence [n, Tq + Tp, 2] (-1 off the passage's tokens) and the span targets."""

    parts: dict
    example_index: np.ndarray
    offsets: np.ndarray
    start_positions: np.ndarray
    end_positions: np.ndarray


def squad_split_features(examples, tokenizer, max_seq_length: int, doc_stride: int,
                         max_query_length: int) -> SquadWindows:
    """SQuAD windows for a split-pair model (see the module docstring)."""
    from tasks.data.squad import answer_positions  # squad imports this module

    layout = PartLayout.from_tokenizer(tokenizer)
    room = max_seq_length - layout.passage_specials
    if not 0 <= doc_stride < room:
        raise ValueError(f"--doc-stride {doc_stride} must be less than the passage tokens of a window ({room}: "
                         f"--max-seq-length {max_seq_length} less {layout.passage_specials} special tokens)")
    questions = [ids[:max_query_length] for ids in tokens_of(tokenizer, [e.question.lstrip() for e in examples])]
    passage_tokens, passage_offsets = tokens_of(tokenizer, [e.context for e in examples], offsets=True)
    check_passages(passage_tokens, [f"question {e.qas_id!r}" for e in examples])
    question_parts, passage_parts, example_index, spans = [], [], [], []
    for index, (question, tokens, offsets) in enumerate(zip(questions, passage_tokens, passage_offsets)):
        part = layout.part("a", question)
        for start in window_starts(len(tokens), room, doc_stride):
            question_parts.append(part)
            passage_parts.append(layout.part("b", tokens[start:start + room]))
            example_index.append(index)
            spans.append(offsets[start:start + room])
    parts = {"a": layout.pad(question_parts), "b": layout.pad(passage_parts)}
    width_q, width_p = parts["a"]["input_ids"].shape[1], parts["b"]["input_ids"].shape[1]
    offsets = np.full((len(spans), width_q + width_p, 2), -1, dtype=np.int64)
    first = width_q + len(layout.passage_prefix)  # the window's first passage token in the joint sequence
    for window, span in enumerate(spans):
        offsets[window, first:first + len(span)] = span
    starts, ends = np.zeros(len(spans), np.int64), np.zeros(len(spans), np.int64)  # 0: the question's first token
    for window, example in enumerate(example_index):
        if examples[example].answers:
            answer = examples[example].answers[0]
            starts[window], ends[window] = answer_positions(offsets[window], answer.start,
                                                            answer.start + len(answer.text), 0)
    return SquadWindows(parts, np.asarray(example_index, np.int64), offsets, starts, ends)


def join_parts(question: dict, passage: dict) -> tuple[dict, np.ndarray]:
    """What a base model reads for split-pair rows, and where each split position went.

    `question` and `passage` hold input_ids, token_type_ids, attention_mask [..., Tq] and [..., Tp]. Returns the
    joint arrays [..., Tq + Tp]: the question part's tokens, then the passage part's, then the padding of both
    (the base model's pair encoding, its positions unbroken), and `positions` [..., Tq + Tp]: for each position
    of the split layout [question part; passage part], its position in the joint arrays, -1 at padding.
    """
    mask = np.concatenate([question["attention_mask"], passage["attention_mask"]], axis=-1).astype(bool)
    order = np.argsort(~mask, axis=-1, kind="stable")  # real tokens first, each group in its order
    joint = {feature: np.take_along_axis(np.concatenate([question[feature], passage[feature]], axis=-1), order, -1)
             for feature in question}
    positions = np.where(mask, np.cumsum(mask, axis=-1) - 1, -1)
    return joint, positions


def student_layout(array: np.ndarray, positions: np.ndarray, fill: float) -> np.ndarray:
    """Per-token outputs of the joint layout ([..., T] logits or [..., T, H] states) at the split layout's
    positions (join_parts), `fill` where the split layout has padding."""
    index = np.maximum(positions, 0)
    if array.ndim == positions.ndim + 1:  # hidden states: the last axis is the width
        gathered = np.take_along_axis(array, index[..., None], axis=-2)
        return np.where((positions >= 0)[..., None], gathered, fill)
    return np.where(positions >= 0, np.take_along_axis(array, index, axis=-1), fill)
