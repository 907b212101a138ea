"""Funnel's relative-position tables, framework-free.

They depend only on the config and the sequence length, so every port takes the same float64 numpy
tables (cast to its dtype) instead of recomputing sin/cos/pow with its own rounding. Dropout on the
sin and cos tables stays in the ports, since it must run in the framework during training.
Notation follows the Funnel-Transformer paper, appendix A.2.
"""
from __future__ import annotations

import numpy as np


def inverse_frequencies(d_model: int) -> np.ndarray:
    half = d_model // 2
    return 1.0 / (10000.0 ** (np.arange(half, dtype=np.float64) / half))


def factorized_sinusoid(d_model: int, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """sin and cos of position * frequency, each [seq_len, d_model / 2]."""
    angles = np.arange(seq_len, dtype=np.float64)[:, None] * inverse_frequencies(d_model)[None]
    return np.sin(angles), np.cos(angles)


def relative_sinusoid(d_model: int, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """sin and cos for every relative distance in [-2 seq_len, 2 seq_len), each [4 seq_len, d_model / 2]."""
    angles = np.arange(-2 * seq_len, 2 * seq_len, dtype=np.float64)[:, None] * inverse_frequencies(d_model)[None]
    return np.sin(angles), np.cos(angles)


def stride_pool_pos(pos: np.ndarray, block_index: int, separate_cls: bool, truncate_seq: bool) -> np.ndarray:
    """Positions left after pooling; a separate <cls> sits at 1 - 2**block_index, before the first block."""
    if not separate_cls:
        return pos[::2]
    kept = pos[1:-1] if truncate_seq else pos[1:]
    return np.concatenate([[1 - 2**block_index], kept[::2]]).astype(pos.dtype)


def relative_pos(pos: np.ndarray, stride: int, pooled_pos: np.ndarray | None = None, shift: int = 1) -> np.ndarray:
    """Relative distances between `pooled_pos` (queries) and `pos` (keys), largest first."""
    if pooled_pos is None:
        pooled_pos = pos
    ref_point = pooled_pos[0] - pos[0]
    max_dist = ref_point + shift * len(pooled_pos) * stride
    min_dist = pooled_pos[0] - pos[-1]
    return np.arange(max_dist, min_dist - 1, -stride, dtype=np.int64)


def relative_shift_indices(config, seq_len: int) -> list[list[np.ndarray | None]]:
    """Per block, rows of the relative table for [attention to unpooled keys, to pooled keys].

    Block 0 has no pooling attention (None). Indices are offset so distance 0 is row 2 * seq_len.
    """
    zero_offset = 2 * seq_len
    pos = np.arange(seq_len, dtype=np.int64)
    pooled_pos = pos
    tables = []
    for block_index in range(config.num_blocks):
        if block_index == 0:
            with_pooling = None
        else:
            pooled_pos = stride_pool_pos(pos, block_index, config.separate_cls, config.truncate_seq)
            with_pooling = relative_pos(pos, 2 ** (block_index - 1), pooled_pos, shift=2) + zero_offset
        pos = pooled_pos
        without_pooling = relative_pos(pos, 2**block_index) + zero_offset
        tables.append([without_pooling, with_pooling])
    return tables
