"""Fuzzing the readers: byte flips, insertions, deletions and truncations of real data files (SST-2, CoLA, MRPC,
RTE TSVs, SQuAD dev, XQuAD; skipped when absent) and of small RACE/BoolQ files, plain and gzipped. Every mutated
file either reads into well-formed examples that the featurizers accept, or raises DataError: never another
exception. Fixed seeds and bounded counts keep each test to seconds."""
from __future__ import annotations

import gzip
import json
import os
import random

import pytest

from tasks.data import DataError
from tasks.data.boolq import BOOLQ_LABELS, boolq_features, read_boolq
from tasks.data.glue import glue_features, glue_task, read_glue_file
from tasks.data.race import race_features, read_race_file
from tasks.data.squad import read_squad, squad_features

from .test_train_support import CONTEXT

MUTATIONS = int(os.environ.get("FUZZ_MUTATIONS", 60))  # more for a longer hunt
STRUCTURE = b'\t\n\r"{}[]:,\\0 '  # bytes that carry the formats' structure, inserted as often as random ones


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One random damage: flip 1-3 bytes, insert or delete one, cut the file, or damage its gzip form."""
    kind = rng.choice(("flip", "insert", "delete", "truncate", "gzip"))
    position = rng.randrange(len(data))
    if kind == "flip":
        out = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            out[rng.randrange(len(out))] = rng.randrange(256)
        return bytes(out)
    if kind == "insert":
        byte = rng.choice((rng.randrange(256), rng.choice(STRUCTURE)))
        return data[:position] + bytes([byte]) + data[position:]
    if kind == "delete":
        return data[:position] + data[position + 1:]
    if kind == "truncate":
        return data[:position]
    packed = bytearray(gzip.compress(data))
    if rng.random() < 0.5:
        return bytes(packed[: rng.randrange(len(packed))])
    packed[rng.randrange(10, len(packed))] ^= 1 << rng.randrange(8)
    return bytes(packed)


def fuzz(tmp_path, name: str, data: bytes, read, check, seed: int) -> int:
    """Read MUTATIONS mutated copies of `data`; `check(examples)` validates a successful read. The reads."""
    rng, reads = random.Random(seed), 0
    path = tmp_path / name
    for attempt in range(MUTATIONS):
        mutated = mutate(data, rng)
        path.write_bytes(mutated)
        try:
            examples = read(path)
        except DataError as error:
            assert str(error).startswith(str(path)), error
            continue
        except Exception as error:  # noqa: BLE001  (the point of the test)
            pytest.fail(f"mutation {attempt} (seed {seed}) of {name}: {type(error).__name__}: {error}")
        check(examples)
        reads += 1
    return reads


def real_lines(locate, *parts, lines: int) -> bytes:
    """The first `lines` lines of a real data file."""
    return b"".join(locate(*parts).read_bytes().splitlines(keepends=True)[:lines])


GLUE_FILES = [("sst-2", ("glue", "SST-2", "dev.tsv")), ("cola", ("glue", "CoLA", "dev.tsv")),
              ("mrpc", ("glue", "MRPC", "dev.tsv")), ("rte", ("glue", "RTE", "hf_export", "dev.tsv"))]


@pytest.mark.parametrize("task, parts", GLUE_FILES, ids=[task for task, _ in GLUE_FILES])
def test_glue_reader_fuzz(task, parts, shared_data, tmp_path, make_tokenizer):
    glue, tokenizer = glue_task(task), make_tokenizer()

    def check(examples):
        assert examples and all(isinstance(e.text_a, str) for e in examples)
        assert all(e.label is None or e.label in glue.labels for e in examples)
        assert {e.label is None for e in examples} != {True, False}
        glue_features(examples, glue, tokenizer, max_seq_length=16)

    data = real_lines(shared_data, *parts, lines=40)
    (tmp_path / "seed.tsv").write_bytes(data)
    assert len(read_glue_file(tmp_path / "seed.tsv", task)) > 30  # the unmutated excerpt reads
    reads = fuzz(tmp_path, "dev.tsv", data, lambda p: read_glue_file(p, task), check, seed=len(task))
    assert 0 < reads < MUTATIONS  # both outcomes are exercised


def squad_excerpt(locate, name: str) -> bytes:
    """Two paragraphs of each of the first two articles of a real SQuAD file, in its compact JSON form."""
    dataset = json.loads(locate("squad", name).read_text(encoding="utf-8"))
    articles = [{**article, "paragraphs": article["paragraphs"][:2]} for article in dataset["data"][:2]]
    return json.dumps({"data": articles, "version": dataset.get("version")}, ensure_ascii=False).encode()


@pytest.mark.parametrize("name", ["dev-v1.1.json", "xquad.en.json"])
def test_squad_reader_fuzz(name, shared_data, tmp_path, make_tokenizer):
    tokenizer = make_tokenizer()

    def check(examples):
        for example in examples:
            assert isinstance(example.question, str) and example.context.strip()
            for answer in example.answers:  # the guarantee training labels rest on
                assert answer.text.strip() and example.context[answer.start:answer.start + len(answer.text)] == \
                    answer.text
        squad_features(examples[:8], tokenizer, max_seq_length=64, doc_stride=16, max_query_length=16)

    reads = fuzz(tmp_path, name, squad_excerpt(shared_data, name), read_squad, check, seed=len(name))
    assert 0 < reads < MUTATIONS


def race_file() -> bytes:
    record = {"id": "high7.txt", "article": CONTEXT, "questions": ["Where did the cat sit?", "The dog ran to _ ."],
              "options": [["on the mat", "in the city", "at school", "on a book"], ["a", "b", "c", "d"]],
              "answers": ["A", "C"]}
    return json.dumps(record).encode()


def test_race_reader_fuzz(tmp_path, make_tokenizer):
    tokenizer = make_tokenizer()

    def check(examples):
        assert examples and all(len(e.options) == 4 and all(isinstance(o, str) for o in e.options) for e in examples)
        assert all(e.label in (0, 1, 2, 3) for e in examples) or all(e.label is None for e in examples)
        race_features(examples, tokenizer, max_seq_length=32)

    reads = fuzz(tmp_path, "7.txt", race_file(), read_race_file, check, seed=7)
    assert 0 < reads < MUTATIONS


def boolq_file() -> bytes:
    rng = random.Random(0)
    lines = [json.dumps({"question": f"is it {n}", "passage": CONTEXT, "title": "t", "answer": rng.random() < 0.5})
             for n in range(8)]
    return ("\n".join(lines) + "\n").encode()


def test_boolq_reader_fuzz(tmp_path, make_tokenizer):
    tokenizer = make_tokenizer()

    def check(examples):
        assert examples and all(isinstance(e.text_a, str) and isinstance(e.text_b, str) for e in examples)
        assert {e.label for e in examples} <= {*BOOLQ_LABELS} or all(e.label is None for e in examples)
        boolq_features(examples, tokenizer, max_seq_length=16)

    reads = fuzz(tmp_path, "train.jsonl", boolq_file(), read_boolq, check, seed=11)
    assert 0 < reads < MUTATIONS
