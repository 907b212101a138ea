"""Helpers of the training, CLI and distillation tests (no tests here): tiny configs, seeded data, tiny task files."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest

from backends import family
from tasks.train import runner_class
from tasks.train.loop import Trainer, TrainArgs
from tasks.train.losses import LOSSES

from .conftest import write_wordpiece_vocab

HEAD_LOSS = {"seqcls": "classification", "mc": "classification", "qa": "span"}


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one intra-op thread (OpenMP's spinning threads only slow them on a busy 2-core machine)."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(family_name: str, dropout: bool = False, preset: str | None = None, **changes):
    """The family's first preset (or `preset`) shrunk to tiny size; every dropout probability 0 unless `dropout`."""
    spec = family(family_name)
    config = spec.shrink((spec.presets[preset] if preset else next(iter(spec.presets.values()))).config)
    if not dropout:
        changes = {**{key: 0.0 for key, value in vars(config).items()
                      if "dropout" in key and isinstance(value, float)}, **changes}
    return config.replace(**changes)


def seeded_data(family_name: str, config, head: str, rows: int, seq_len: int = 12, seed: int = 1) -> dict:
    """The family's parity inputs plus seeded targets for the head's loss."""
    rng = np.random.default_rng(seed)
    data = family(family_name).make_inputs(config, head, rows, seq_len, rng)
    if head == "qa":
        data["start_positions"] = rng.integers(0, seq_len, rows)
        data["end_positions"] = rng.integers(0, seq_len, rows)
    else:
        data["labels"] = rng.integers(0, config.num_labels if head == "seqcls" else 3, rows)
    return data


def make_runner(backend: str, family_name: str, config, head: str, dtype: str, seed: int = 0,
                dropout_masks: str = "shared", params=None, trainable=None):
    params = params if params is not None else family(family_name).init_params(config, head,
                                                                                np.random.default_rng(seed))
    return runner_class(backend)(family_name, config, head, params, dtype=dtype, dropout_masks=dropout_masks,
                                 trainable=trainable)


def make_trainer(runner, data: dict, output_dir, **settings) -> Trainer:
    args = TrainArgs(**{"progress": False, **settings})
    return Trainer(runner, args, data, LOSSES[HEAD_LOSS[runner.head]], output_dir)


def losses(trainer: Trainer) -> np.ndarray:
    return np.array([entry["loss"] for entry in trainer.state.log_history if "loss" in entry])


def lstm_biases_summed(params: dict) -> dict:
    """The weights with each LSTM's bias_ih + bias_hh as one array: the TF port holds Keras' one bias for
    the pair (torch steps both halves, TF their sum), so only the sum is the same function everywhere."""
    out = {name: value for name, value in params.items() if ".bias_hh_" not in name}
    for name in out:
        if ".bias_ih_" in name:
            out[name] = np.asarray(params[name], np.float64) + np.asarray(params[name.replace("_ih_", "_hh_")])
    return out


def max_weight_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(np.asarray(a[k], np.float64) - np.asarray(b[k], np.float64)))) for k in a)


# ---- tiny task files -------------------------------------------------------------------------------

POSITIVE, NEGATIVE = ("good", "happy", "great", "nice"), ("bad", "sad", "poor", "awful")
FILLER = tuple("the man saw a dog and the cat sat on the mat".split())
CONTEXT = ("The cat sat on the mat in the house . The dog ran to the school with the children . "
           "The man read a book about the city .")
SQUAD_QUESTIONS = (("where did the cat sit", "on the mat"), ("who ran to the school", "The dog"),
                   ("what did the man read", "a book"))


def sentence(rng: random.Random, label: int) -> str:
    words = rng.sample(FILLER, 4) + [rng.choice(POSITIVE if label else NEGATIVE)]
    rng.shuffle(words)
    return " ".join(words)


def write_model_folder(folder, family_name: str, dropout: bool = False, **changes):
    """config.json of a tiny model (no weights: fresh numpy init) and a vocab.txt covering the test texts."""
    write_wordpiece_vocab(folder, [CONTEXT, " ".join(POSITIVE + NEGATIVE + FILLER)])
    vocab = len((folder / "vocab.txt").read_text().split())
    config = tiny_config(family_name, dropout, vocab_size=vocab + 4, **changes)
    (folder / "config.json").write_text(config.to_json_string())
    return folder


def write_glue(folder, task: str = "sst-2", rows: int = 24, seed: int = 0):
    """train/dev/test TSV in the official GLUE layouts of SST-2 (sentences), MRPC (pairs), STS-B (scores)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev", "test"):
        labels = [rng.randint(0, 1) for _ in range(rows)]
        if task == "sst-2":
            header = "sentence\tlabel" if split != "test" else "index\tsentence"
            lines = [f"{sentence(rng, y)}\t{y}" if split != "test" else f"{i}\t{sentence(rng, y)}"
                     for i, y in enumerate(labels)]
        elif task == "sts-b":
            header = "index\tsentence1\tsentence2" + ("\tscore" if split != "test" else "")
            lines = [f"{i}\t{sentence(rng, y)}\t{sentence(rng, y)}" + (f"\t{4.0 * y + rng.random():.2f}"
                                                                   if split != "test" else "")
                     for i, y in enumerate(labels)]
        else:  # mrpc
            header = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String" if split != "test" else \
                "index\t#1 ID\t#2 ID\t#1 String\t#2 String"
            lines = [f"{y if split != 'test' else i}\t1\t2\t{sentence(rng, y)}\t{sentence(rng, y)}"
                     for i, y in enumerate(labels)]
        (folder / f"{split}.tsv").write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    return folder


def write_squad(folder, version_2: bool = False):
    """train/dev JSON in the SQuAD layout (v2.0 adds an unanswerable question)."""
    folder.mkdir(parents=True, exist_ok=True)
    version = "v2.0" if version_2 else "v1.1"
    for split in ("train", "dev"):
        qas = [{"id": f"{split}-{i}", "question": q, "answers": [{"text": a, "answer_start": CONTEXT.index(a)}]}
               for i, (q, a) in enumerate(SQUAD_QUESTIONS)]
        if version_2:
            qas.append({"id": f"{split}-none", "question": "who sat on the dog", "answers": [], "is_impossible": True})
        data = {"version": version, "data": [{"title": "t", "paragraphs": [{"context": CONTEXT, "qas": qas}]}]}
        (folder / f"{split}-{version}.json").write_text(json.dumps(data), encoding="utf-8")
    return folder


def write_race(folder, seed: int = 0):
    """train/dev/test/{middle,high}/*.txt RACE article files."""
    rng = random.Random(seed)
    for split in ("train", "dev", "test"):
        for level in ("middle", "high"):
            (folder / split / level).mkdir(parents=True, exist_ok=True)
            for n in range(2):
                answers = [rng.choice("ABCD") for _ in range(2)]
                record = {"id": f"{level}{n}.txt", "article": CONTEXT,
                          "questions": ["where did the cat sit ?", "the dog ran to _ ."],
                          "options": [["on the mat", "in the city", "at school", "on a book"]] * 2,
                          "answers": answers}
                (folder / split / level / f"{n}.txt").write_text(json.dumps(record), encoding="utf-8")
    return folder


def write_boolq(folder, rows: int = 16, seed: int = 0):
    """train.jsonl, val.jsonl (SuperGLUE's name), test.jsonl (no answers)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("train", "val", "test"):
        records = []
        for _ in range(rows):
            label = rng.randint(0, 1)
            record = {"question": sentence(rng, label), "passage": CONTEXT}
            if name != "test":
                record["answer"] = bool(label)
            records.append(json.dumps(record))
        (folder / f"{name}.jsonl").write_text("\n".join(records) + "\n", encoding="utf-8")
    return folder
