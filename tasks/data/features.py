"""Tokenizer loading and the pair-classification featurizer shared by GLUE and BoolQ.

Features are numpy arrays built with transformers' fast tokenizers, so every backend gets the same bytes.
Note: `import transformers` itself imports torch when torch is installed (transformers 4.57); set
USE_TORCH=0 USE_TF=0 in the environment of a process that must stay framework-free.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# what a tokenisation yields; a model's InputSpecs (backends/spec.py) say which of them it reads, of which text
TOKEN_FEATURES = ("input_ids", "token_type_ids", "attention_mask")

# (files that must all be present, transformers class that loads them); the first match wins.
TOKENIZER_RULES = (
    (("tokenizer.json", "tokenizer_config.json"), "AutoTokenizer"),
    (("tokenizer.json", "config.json"), "AutoTokenizer"),
    (("vocab.txt",), "BertTokenizerFast"),
    (("vocab.json", "merges.txt"), "RobertaTokenizerFast"),
)


@dataclass(frozen=True)
class PairExample:
    """A text or text pair; label is a label string, a float score (regression) or None (unlabelled)."""

    guid: str
    text_a: str
    text_b: str | None
    label: str | float | None


def load_tokenizer(model_dir: str | Path):
    """Load a fast tokenizer from a local directory (never contacts a hub)."""
    model_dir = Path(model_dir)
    for files, class_name in TOKENIZER_RULES:
        if all((model_dir / name).is_file() for name in files):
            break
    else:
        wanted = " or ".join("+".join(files) for files, _ in TOKENIZER_RULES)
        raise FileNotFoundError(f"{model_dir}: no tokenizer files found (wanted {wanted})")
    # Imported here, not at module level: transformers pulls in torch, readers and metrics must not.
    import transformers

    tokenizer = getattr(transformers, class_name).from_pretrained(str(model_dir), local_files_only=True)
    require_fast(tokenizer)
    return tokenizer


def require_fast(tokenizer) -> None:
    """Raise TypeError unless `tokenizer` is a transformers fast tokenizer (offsets, overflow windows)."""
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(f"a fast tokenizer is required, got {type(tokenizer).__name__}")


def encode_pairs(
    tokenizer, text_a: Sequence[str], text_b: Sequence[str] | None, max_seq_length: int
) -> dict[str, np.ndarray]:
    """Tokenize texts (pairs when text_b is given), truncating longest_first, padded to max_seq_length.

    Returns int64 arrays input_ids, token_type_ids, attention_mask of shape [n, max_seq_length].
    """
    require_fast(tokenizer)
    if text_b is not None and len(text_b) != len(text_a):
        raise ValueError(f"text_a has {len(text_a)} entries but text_b has {len(text_b)}")
    encoded = tokenizer(
        list(text_a),
        None if text_b is None else list(text_b),
        truncation="longest_first",
        max_length=max_seq_length,
        padding="max_length",
        return_token_type_ids=True,
        return_attention_mask=True,
    )
    return {
        name: np.asarray(encoded[name], dtype=np.int64).reshape(len(text_a), max_seq_length) for name in TOKEN_FEATURES
    }


def encode_inputs(
    tokenizer, text_a: Sequence[str], text_b: Sequence[str] | None, max_seq_length: int, inputs=None
) -> dict[str, np.ndarray]:
    """The arrays a model's `inputs` (InputSpecs) declare, [n, max_seq_length] each: every input is one
    tokenizer feature of the texts tokenised together (text "joint"), or of text_a or text_b alone (a
    two-tower model's per-sentence inputs). Without `inputs`: the joint input_ids, token_type_ids, attention_mask.
    """
    if inputs is None:
        return encode_pairs(tokenizer, text_a, text_b, max_seq_length)
    by_text, features = {}, {}  # text -> its encode_pairs features; input name -> array
    for spec in inputs:
        if spec.text not in by_text:
            if spec.text == "b" and text_b is None:
                raise ValueError(f"the model reads a second text ({spec.name}); these examples have one text each")
            texts = {"joint": (text_a, text_b), "a": (text_a, None), "b": (text_b, None)}[spec.text]
            by_text[spec.text] = encode_pairs(tokenizer, *texts, max_seq_length)
        if spec.feature not in by_text[spec.text]:
            raise ValueError(f"input {spec.name}: no tokenizer feature {spec.feature!r}; "
                             f"features: {', '.join(TOKEN_FEATURES)}")
        features[spec.name] = by_text[spec.text][spec.feature].astype(spec.dtype, copy=False)
    return features


def label_array(labels: Sequence[str | float | None], label_list: Sequence[str] | None) -> np.ndarray | None:
    """Label ids (int64) for classification, scores (float32) for regression (label_list None).

    Returns None when every label is None (unlabelled data such as GLUE test files).
    """
    missing = sum(label is None for label in labels)
    if labels and missing == len(labels):
        return None
    if missing:
        raise ValueError(f"{missing} of {len(labels)} examples have no label; label all or none")
    if label_list is None:
        return np.asarray(labels, dtype=np.float32)
    index = {name: i for i, name in enumerate(label_list)}
    unknown = sorted({label for label in labels if label not in index})
    if unknown:
        raise ValueError(f"labels {unknown} are not in the label list {list(label_list)}")
    return np.asarray([index[label] for label in labels], dtype=np.int64)


def pair_features(
    examples: Sequence[PairExample], tokenizer, max_seq_length: int, label_list: Sequence[str] | None, inputs=None
) -> dict[str, np.ndarray]:
    """Features for pair classification: the model's `inputs` (encode_inputs) plus `labels` when the
    examples are labelled.

    label_list gives the label strings in id order; None means regression (float32 labels).
    """
    has_pairs = any(example.text_b is not None for example in examples)
    if has_pairs and any(example.text_b is None for example in examples):
        raise ValueError("examples mix single texts and text pairs")
    features = encode_inputs(
        tokenizer,
        [example.text_a for example in examples],
        [example.text_b for example in examples] if has_pairs else None,
        max_seq_length,
        inputs,
    )
    labels = label_array([example.label for example in examples], label_list)
    if labels is not None:
        features["labels"] = labels
    return features
