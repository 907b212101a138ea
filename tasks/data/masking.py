"""Masked-LM masking in numpy, as transformers' DataCollatorForLanguageModeling draws it (80/10/10).

Each selected token becomes [MASK] with probability 0.8, a random token id (uniform over the tokenizer's
ids, as transformers draws them) with 0.1, and stays as it is with 0.1; `labels` hold the original id at the
selected positions and IGNORE_INDEX elsewhere. Only `maskable` positions (not special tokens, not padding)
are ever selected. Whole-word masking (transformers 4.57's `whole_word_mask`): only the first piece of each
word is drawn, with the probability, and a drawn word is masked in all its pieces.

The draws come from a numpy Generator the caller seeds: the training driver seeds one per micro-batch from
(seed, update, micro-batch), the validation masks one per row from the row's index, so every backend, and a
resumed run, masks the same tokens.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = -100  # label of a position outside the loss (transformers' and torch's ignore_index)
MASK_TOKEN_SHARE = 0.8  # of the selected tokens: replaced by the mask token
RANDOM_TOKEN_SHARE = 0.1  # replaced by a random token; the rest (0.1) keeps its token
TRAIN_STREAM = 0x6D6C6D  # SeedSequence words that keep the masking stream apart from other draws of a seed
EVAL_STREAM = 0x6D6C6D + 1


@dataclass(frozen=True)
class Masking:
    """How tokens are chosen and replaced: transformers' mlm_probability, mask token and vocabulary size."""

    mask_token_id: int
    vocab_size: int  # random replacements are drawn from [0, vocab_size): len(tokenizer), as transformers
    probability: float = 0.15
    whole_word: bool = False

    def __post_init__(self):
        if not 0 < self.probability < 1:
            raise ValueError(f"the masking probability must lie in (0, 1), got {self.probability}")

    def apply(self, input_ids, maskable, rng: np.random.Generator, word_starts=None) -> tuple[np.ndarray, np.ndarray]:
        """(masked input ids, labels) of int64 ids [rows, seq]; `maskable` [rows, seq] bool; `word_starts`
        (whole-word masking) marks the first piece of each word. `input_ids` is not changed."""
        input_ids, maskable = np.asarray(input_ids), np.asarray(maskable, dtype=bool)
        drawn = maskable & (np.asarray(word_starts, dtype=bool) if self.whole_word else True)
        selected = drawn & (rng.random(input_ids.shape) < self.probability)
        if self.whole_word:
            selected = spread_to_words(selected, maskable, word_starts)
        labels = np.where(selected, input_ids, IGNORE_INDEX).astype(np.int64)
        masked = np.array(input_ids, dtype=np.int64)
        replaced = selected & (rng.random(input_ids.shape) < MASK_TOKEN_SHARE)
        # of the rest, half gets a random token: 0.1 / (1 - 0.8), as transformers scales random_replace_prob
        randomised = selected & ~replaced & (
            rng.random(input_ids.shape) < RANDOM_TOKEN_SHARE / (1 - MASK_TOKEN_SHARE))
        masked[replaced] = self.mask_token_id
        masked[randomised] = rng.integers(0, self.vocab_size, int(randomised.sum()), dtype=np.int64)
        return masked, labels


def spread_to_words(selected, maskable, word_starts) -> np.ndarray:
    """Every maskable piece whose word's first piece is selected: a piece's word starts at the last word start
    at or before it (special tokens always end a word, so no word spans one)."""
    positions = np.arange(selected.shape[-1])
    start = np.maximum.accumulate(np.where(np.asarray(word_starts, dtype=bool), positions, -1), axis=-1)
    chosen = np.take_along_axis(selected, np.maximum(start, 0), axis=-1)
    return maskable & (start >= 0) & chosen


def word_starts(offsets, maskable) -> np.ndarray:
    """[rows, seq] bool: the maskable pieces that begin a word, from the tokenizer's character offsets [rows,
    seq, 2]: a piece begins a word unless it starts where the previous piece ended and that piece was maskable
    (transformers' `_calc_word_ids_and_prob_mask`)."""
    offsets, maskable = np.asarray(offsets), np.asarray(maskable, dtype=bool)
    previous_end = np.concatenate([np.full(offsets.shape[:-2] + (1,), -1), offsets[..., :-1, 1]], axis=-1)
    previous_maskable = np.concatenate([np.zeros(maskable.shape[:-1] + (1,), bool), maskable[..., :-1]], axis=-1)
    return maskable & ((offsets[..., 0] != previous_end) | ~previous_maskable)


def train_rng(seed: int, step: int, micro: int) -> np.random.Generator:
    """The generator of micro-batch `micro` of update `step`: its rows are masked in batch order."""
    return np.random.default_rng([seed, TRAIN_STREAM, step, micro])


def eval_rng(row: int) -> np.random.Generator:
    """The generator of validation row `row`: the same masks whatever the seed, batch size or row count."""
    return np.random.default_rng([EVAL_STREAM, row])


def mask_rows(masking: Masking, input_ids, maskable, word_starts=None) -> tuple[np.ndarray, np.ndarray]:
    """The fixed validation masking: row i masked by eval_rng(i)."""
    parts = [masking.apply(input_ids[i:i + 1], maskable[i:i + 1], eval_rng(i),
                           None if word_starts is None else word_starts[i:i + 1]) for i in range(len(input_ids))]
    if not parts:
        return np.asarray(input_ids, np.int64), np.full(np.shape(input_ids), IGNORE_INDEX, np.int64)
    return np.concatenate([ids for ids, _ in parts]), np.concatenate([labels for _, labels in parts])
