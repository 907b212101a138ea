"""Data augmentation for distillation, framework-free: the rules of Tang et al. 2019 and TinyBERT as data,
their samplers over words (numpy, one seeded generator per example), the teacher's input-embedding
neighbours of multi-piece words, and the transfer set's stored teacher logits.

- Tang et al. 2019 ("Distilling Task-Specific Knowledge from BERT into Simple Neural Networks", section 3.3):
  per word, with p_mask the word becomes the teacher's mask token; with p_pos a random word of the same part of
  speech; then, with p_ng per sample, the sample is cut to a random n-gram, n uniform in 1..5. n_iter samples
  per example, duplicates removed. The POS rule is NOT applied: no part-of-speech tagger installs from PyPI with
  its model (nltk's averaged perceptron needs `nltk.download`, spaCy's English pipelines are not published on
  PyPI by their authors), so a word drawn into the POS band stays unchanged.
- TinyBERT (Jiao et al. 2020, data_augmentation.py): for each word with p_t, a word of one word piece becomes one
  of the masked-LM's top K candidates at its masked position (the masked sentence, then the original one as the
  second segment, as the seed builds it), a word of several pieces one of its K nearest neighbours in a word
  embedding space (GloVe in the paper; here the masked-LM's own input embeddings: the mean of the word's piece
  vectors against every whole-word token, cosine). N samples per example, duplicates removed.

Words are the whitespace-separated tokens of a text (GLUE's SST-2 comes tokenised that way); a sample is its
words joined by single spaces. Every random draw comes from `example_rng(seed, index)`, and the draws of a
sample never depend on the teacher, so a resumed run draws what a one-shot run draws.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backends.errors import BadInput
from backends.tensorfile import SafetensorsReader


@dataclass(frozen=True)
class AugmentRules:
    """One method's probabilities and counts (the papers' values are METHODS' defaults)."""

    name: str
    samples: int  # samples drawn per example (n_iter, N)
    p_mask: float = 0.0  # Tang: a word becomes the mask token
    p_pos: float = 0.0  # Tang: a word becomes a random word of its part of speech (not applied: no tagger)
    p_ngram: float = 0.0  # Tang: the sample is cut to one n-gram
    max_ngram: int = 0  # Tang: n is drawn uniformly from 1..max_ngram
    p_replace: float = 0.0  # TinyBERT: a word is replaced by one of its candidates
    top_k: int = 0  # TinyBERT: candidates per word (the MLM's top K, or the K nearest neighbours)


METHODS = {
    "tang": AugmentRules("tang", samples=20, p_mask=0.1, p_pos=0.1, p_ngram=0.25, max_ngram=5),
    "tinybert": AugmentRules("tinybert", samples=20, p_replace=0.4, top_k=15),
}
POS_RULE_NOTE = ("the POS-guided replacement of Tang et al. (p_pos) is not applied: no part-of-speech tagger installs "
                 "from PyPI with its model (nltk's needs a data download), so those words stay unchanged")


def example_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of example `index` (its position in the train file): independent of any other example's."""
    return np.random.default_rng([seed, index])


def words_of(text: str) -> list[str]:
    return text.split()


def example_texts(example) -> tuple[str, ...]:
    """An example's texts: (text_a,), or (text_a, text_b) of a pair."""
    return (example.text_a,) if example.text_b is None else (example.text_a, example.text_b)


def text_samples(texts: tuple[str, ...], sample, rng: np.random.Generator) -> list[tuple[str, ...]]:
    """An example's samples as text tuples, in draw order: `sample(words, rng)` draws each text's word lists, each
    text of a pair on its own, a's draws first (duplicates not yet removed)."""
    per_text = [sample(words_of(text), rng) for text in texts]
    return [tuple(" ".join(words) for words in sample_words) for sample_words in zip(*per_text)]


def keep_new(samples: list[tuple[str, ...]], seen: set) -> list[tuple[str, ...]]:
    """The samples with no empty text that equal no row in `seen` (the originals, earlier samples), in order; the
    kept ones join `seen`."""
    kept = []
    for texts in samples:
        if all(texts) and texts not in seen:
            seen.add(texts)
            kept.append(texts)
    return kept


def tang_samples(words: list[str], rules: AugmentRules, rng: np.random.Generator, mask_token: str,
                 samples: int | None = None) -> list[list[str]]:
    """`samples` word lists drawn by Tang et al.'s rules (duplicates not yet removed). Per sample: one uniform draw
    per word (below p_mask: the mask token; below p_mask + p_pos: the POS band, unchanged), then one draw for the
    n-gram rule, n and the n-gram's start."""
    out = []
    for _ in range(rules.samples if samples is None else samples):
        draws = rng.random(len(words))
        sample = [mask_token if u < rules.p_mask else word for u, word in zip(draws, words)]
        cut, n, start = rng.random(), int(rng.integers(1, rules.max_ngram + 1)), rng.random()
        if cut < rules.p_ngram and n < len(sample):
            first = int(start * (len(sample) - n + 1))
            sample = sample[first:first + n]
        out.append(sample)
    return out


def tinybert_draws(n_words: int, rules: AugmentRules, rng: np.random.Generator,
                   samples: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(replace [samples, words] bool, pick [samples, words] uniform in [0, 1)): which words each sample replaces,
    and where in its candidate list the replacement lies (index floor(pick * candidates))."""
    count = rules.samples if samples is None else samples
    return rng.random((count, n_words)) < rules.p_replace, rng.random((count, n_words))


def tinybert_samples(words: list[str], candidates: list[list[str]], rules: AugmentRules,
                     rng: np.random.Generator, samples: int | None = None) -> list[list[str]]:
    """Word lists drawn by TinyBERT's rule: each word with p_replace becomes one of its candidates (a word without
    candidates stays)."""
    replace, pick = tinybert_draws(len(words), rules, rng, samples)
    out = []
    for row_replace, row_pick in zip(replace, pick):
        sample = list(words)
        for i, options in enumerate(candidates):
            if row_replace[i] and options:
                sample[i] = options[int(row_pick[i] * len(options))]
        out.append(sample)
    return out


def eligible(word: str) -> bool:
    """TinyBERT replaces words of letters only (the seed's _is_valid)."""
    return word.isalpha()


def whole_word_tokens(tokenizer) -> np.ndarray:
    """Bool over the vocabulary: tokens that stand alone as a word of letters (one piece when the word is
    tokenised by itself, e.g. not BERT's "##ing" continuation pieces or RoBERTa's pieces without "Ġ"), special
    tokens excluded: the words TinyBERT's replacements may be."""
    size = len(tokenizer)
    tokens = tokenizer.convert_ids_to_tokens(list(range(size)))
    texts = [tokenizer.convert_tokens_to_string([token]).strip() for token in tokens]
    special = set(tokenizer.all_special_ids)
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return np.array([i not in special and text.isalpha() and ids == [i]
                     for i, (text, ids) in enumerate(zip(texts, encoded))], dtype=bool)


def nearest_words(vectors: np.ndarray, embeddings: np.ndarray, allowed: np.ndarray, k: int) -> np.ndarray:
    """[queries, k] ids of the `allowed` rows of `embeddings` nearest to each of `vectors` by cosine (highest
    first; ties: the lower id first)."""
    ids = np.flatnonzero(allowed)
    table = embeddings[ids].astype(np.float64)
    table /= np.maximum(np.linalg.norm(table, axis=1, keepdims=True), 1e-30)
    queries = np.asarray(vectors, dtype=np.float64)
    queries = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-30)
    similarity = queries @ table.T
    order = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    return ids[order]


def top_candidates(logits: np.ndarray, allowed: np.ndarray, k: int) -> np.ndarray:
    """The seed's candidates at a masked position: the top k ids by logit (ties: the lower id first), of which the
    whole-word tokens are kept (so fewer than k may remain)."""
    order = np.argsort(-np.asarray(logits, dtype=np.float64), kind="stable")[:k]
    return order[allowed[order]]


# ---- the transfer set's stored teacher logits ----

LOGITS_SUFFIX = ".teacher-logits.safetensors"
LOGITS_TENSOR = "logits"


def logits_path(train_file: str | Path) -> Path:
    """Where the teacher's logits of a transfer set's rows lie: beside it, OUT/train.tsv.teacher-logits.safetensors."""
    train_file = Path(train_file)
    return train_file.with_name(train_file.name + LOGITS_SUFFIX)


def file_digest(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def params_digest(params: dict) -> str:
    """sha256 over a model's canonical parameters (names, dtypes, shapes, bytes): the same teacher in any
    checkpoint format has the same digest."""
    digest = hashlib.sha256()
    for name in sorted(params):
        array = np.ascontiguousarray(params[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
        digest.update(memoryview(array.reshape(-1).view(np.uint8)))
    return digest.hexdigest()


class TransferSetError(BadInput):
    """A transfer set's stored logits do not belong to its rows or to the teacher."""


def read_stored_logits(train_file: Path, rows: int, num_labels: int | None,
                       teacher_digest: str) -> tuple[np.ndarray, dict]:
    """(logits of the first `rows` rows [rows, labels], metadata) stored beside `train_file`, checked against the
    file's bytes and row count, the task's label count and the teacher's parameters; TransferSetError naming the
    file."""
    path = logits_path(train_file)
    reader = SafetensorsReader(path)
    meta = reader.metadata()
    if LOGITS_TENSOR not in reader:
        raise TransferSetError(f"{path}: no {LOGITS_TENSOR!r} tensor")
    if meta.get("train_sha256") != file_digest(train_file):
        raise TransferSetError(f"{path}: its logits were written for other rows than {train_file} holds (the file "
                               "changed since `tasks augment` wrote it); rerun augment or remove the logits file")
    shape = reader.shape(LOGITS_TENSOR)
    if len(shape) != 2 or str(shape[0]) != meta.get("rows") or shape[0] < rows:
        raise TransferSetError(f"{path}: {shape[0] if shape else 0} rows of logits, {train_file} has "
                               f"{meta.get('rows')} rows (and {rows} are read)")
    if num_labels is not None and shape[1] != num_labels:
        raise TransferSetError(f"{path}: logits of {shape[1]} labels; the task has {num_labels}")
    if meta.get("teacher_sha256") != teacher_digest:
        raise TransferSetError(f"{path}: its logits come from another teacher ({meta.get('teacher')}) than --teacher "
                               "(the parameters differ); give that teacher or remove the logits file")
    return reader[LOGITS_TENSOR][:rows], meta
