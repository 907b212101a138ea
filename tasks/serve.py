"""Serving a DeFormer with cached passages: encode each passage once, answer many questions against it.

A DeFormer (backends/deformer/) encodes the passage alone, question-independent, in its layers 1..E2+A, so a
passage's states at those layers (`model.encode_passage`) can be computed once and reused for every question
(`model(..., passage_cache=...)`). `PassageServer` does this:

- a passage is cut into windows of `max_seq_length` tokens ("p [SEP]", RoBERTa "</s> p </s>"; consecutive
  windows share `doc_stride` tokens) that never depend on a question; a question is "[CLS] q [SEP]" ("<s> q </s>"),
  at most the model's `max_question_length` tokens (longer is an error, not a truncation: the model has no
  positions for it);
- `encode_passages` returns each passage's `PassageEntry` (windows and per-layer states, numpy) from the memory
  cache (least recently used entries dropped beyond `max_cache_bytes`), from a safetensors file in `cache_dir`,
  or computed (and then written there, atomically);
- `answer_with_cache` runs the questions against an entry (the model gets each window's states once per batch
  and the window of each question row, so an assist layer projects a window's keys and values once for all the
  questions reading it; no per-layer outputs are collected) and decodes spans with `tasks evaluate`'s SQuAD
  decoding (`postprocess_squad`: n-best starts and ends, spans inside the passage, the question's first token
  as the null answer of v2.0); `answer_one_shot` runs the full model on [question; passage] instead (the same
  windows): its logits equal the cached ones (float64: <= 1e-10).

The cache file of a passage is `<cache_dir>/<key>.safetensors`, key = sha256 of (passage text, tokenizer,
model: family, config incl. E2/A/E3 and a digest of the weights, dtype, window settings); its metadata names
the model. `cache_dir/cache.json` says which model the folder belongs to: opening it with another model or
config is refused, naming both. Everything is checked before a framework is imported; `PredictJob` is the
`python -m tasks predict` command.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backends import framework
from backends.errors import WeightsError
from backends.tensorfile import SafetensorsReader, atomic_path, save_arrays
from tasks.data.features import load_tokenizer
from tasks.data.files import DataError, no_examples, parse_json, read_text, require, text_lines
from tasks.data.split_pair import PartLayout, tokens_of, window_starts
from tasks.data.squad import SquadExample, SquadFeatures, postprocess_squad, read_squad
from tasks.train.job import check_output_dir, log
from tasks.train.model import load_model, parse_overrides
from tasks.train.task import TaskError

CACHE_FORMAT = "deformer-passage-cache/1"
MANIFEST_FILE = "cache.json"  # which model a cache folder belongs to
CACHE_SUFFIX = ".safetensors"
DEFAULT_CACHE_BYTES = 2 << 30  # in-memory bound of the cached passage states
DEFAULT_SEQ_LENGTH = 384  # passage tokens per window, special tokens included (tasks' SQuAD default)
FAMILY = "deformer"
STATE_PREFIX = "passage_states."  # cache file tensors: passage_states.<layer>, and the windows' WINDOW_ARRAYS
WINDOW_ARRAYS = ("input_ids", "attention_mask", "token_type_ids", "offsets")
PASSAGE_INDEX = "passage_index"  # passage_cache: the window of each question row (backends/deformer)


class ServeError(TaskError):
    """Bad input to serving: an empty passage, a question longer than the model takes, another model's cache."""


# ---- input files ---------------------------------------------------------------------------------------------

def read_questions(path) -> list[SquadExample]:
    """Questions from a SQuAD-format JSON file (v1.1 or v2.0; answers optional) or JSONL of {"context",
    "question", "id"} objects, gzipped or not; DataError naming the file and the record otherwise."""
    path = Path(path)
    text = read_text(path)
    try:
        whole = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        whole = None
    if isinstance(whole, dict) and "data" in whole:
        return read_squad(path)
    examples, seen = [], set()
    for number, line in enumerate(text_lines(text), start=1):
        if not line.strip():
            continue
        record = require(parse_json(path, line, number), dict, path, number, "a JSONL record ({context, question, "
                                                                               "id}) or a SQuAD file")
        for key in ("context", "question", "id"):
            if key not in record:
                raise DataError(path, number, f"missing key {key!r}")
        context = require(record["context"], str, path, number, "the context", "context")
        question = require(record["question"], str, path, number, "the question", "question")
        qas_id = str(require(record["id"], (str, int), path, number, "the id", "id"))
        if not context.strip():
            raise DataError(path, number, "the context is empty")
        if not qas_id or qas_id in seen:
            raise DataError(path, number, f"missing or duplicate id {qas_id!r}")
        seen.add(qas_id)
        examples.append(SquadExample(qas_id, "", question, context, (), False))
    if not examples:
        raise no_examples(path, "questions")
    return examples


def by_passage(examples) -> dict[str, list[SquadExample]]:
    """The questions of each distinct context, in order of first appearance."""
    groups: dict[str, list[SquadExample]] = {}
    for example in examples:
        groups.setdefault(example.context, []).append(example)
    return groups


# ---- tokens: question and passage apart ----------------------------------------------------------------------

@dataclass(frozen=True)
class PassageWindows:
    """A passage's windows, [W, Tp] each: input_ids, attention_mask, token_type_ids, and offsets [W, Tp, 2] (the
    character span of each passage token, -1 for special and padding tokens)."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.input_ids)

    def arrays(self) -> dict:
        return {name: getattr(self, name) for name in WINDOW_ARRAYS}

    def model_inputs(self, rows) -> dict:
        return {f"passage_{name}": getattr(self, name)[rows] for name in WINDOW_ARRAYS[:3]}


class Tokens:
    """The DeFormer's two inputs from text, laid out as the task layer's split pairs (tasks/data/split_pair.py,
    what `tasks evaluate` feeds a DeFormer): questions "[CLS] q [SEP]" ("<s> q </s>"), never cut (a question
    longer than max_question_length is an error: the model has no positions for it), and passage windows "p [SEP]"
    ("</s> p </s>") of max_seq_length tokens, consecutive windows sharing doc_stride tokens."""

    def __init__(self, tokenizer, max_question_length: int, max_seq_length: int, doc_stride: int):
        self.tokenizer, self.max_question_length = tokenizer, max_question_length
        self.layout = PartLayout.from_tokenizer(tokenizer)
        self.room = max_seq_length - self.layout.passage_specials  # passage tokens per window
        if self.room < 1:
            raise ServeError(f"--max-seq-length {max_seq_length} leaves no room for passage tokens")
        if not 0 <= doc_stride < self.room:
            raise ServeError(f"--doc-stride {doc_stride} must be at least 0 and less than the {self.room} "
                             f"passage tokens of a window (--max-seq-length {max_seq_length})")
        self.doc_stride = doc_stride

    def passage(self, text: str) -> PassageWindows:
        (tokens,), (spans,) = tokens_of(self.tokenizer, [text], offsets=True)
        if not tokens:
            raise ServeError("the passage is empty (no tokens)")
        starts = window_starts(len(tokens), self.room, self.doc_stride)
        arrays = self.layout.pad([self.layout.part("b", tokens[start:start + self.room]) for start in starts])
        offsets = np.full((*arrays["input_ids"].shape, 2), -1, np.int64)
        first = len(self.layout.passage_prefix)
        for window, start in enumerate(starts):
            window_spans = spans[start:start + self.room]
            offsets[window, first:first + len(window_spans)] = window_spans
        return PassageWindows(arrays["input_ids"], arrays["attention_mask"], arrays["token_type_ids"], offsets)

    def questions(self, questions, ids=None) -> dict:
        """question_* arrays [Q, Tq], padded to the longest; ServeError for one past max_question_length."""
        parts = [self.layout.part("a", tokens) for tokens in tokens_of(self.tokenizer, [q.lstrip() for q in questions])]
        for n, (row, _) in enumerate(parts):
            if len(row) > self.max_question_length:
                name = f"question {ids[n]!r}" if ids is not None else f"question {n}"
                raise ServeError(f"{name} has {len(row)} tokens with its special tokens; the model's "
                                 f"max_question_length is {self.max_question_length}")
        return {f"question_{name}": array for name, array in self.layout.pad(parts).items()}


def joint_features(questions: dict, windows: PassageWindows, rows_q: np.ndarray, rows_w: np.ndarray,
                   examples_of_rows: np.ndarray) -> SquadFeatures:
    """The SquadFeatures `postprocess_squad` decodes: rows over the joint sequence [question; passage window]
    (the logits' layout), the question's first token as each row's null answer."""
    question_ids = questions["question_input_ids"][rows_q]
    offsets = np.concatenate([np.full((*question_ids.shape, 2), -1, np.int64), windows.offsets[rows_w]], axis=1)
    ids = np.concatenate([question_ids, windows.input_ids[rows_w]], axis=1)
    return SquadFeatures({"input_ids": ids}, examples_of_rows, offsets, np.zeros(len(ids), np.int64))


# ---- the cache ------------------------------------------------------------------------------------------------

@dataclass
class PassageEntry:
    """One passage encoded: its windows and states (numpy, [W, Tp, H] each: the embedding output and layers
    1..E2+A), and the cache key."""

    key: str
    passage: str
    windows: PassageWindows
    states: list
    source: str = "computed"  # computed, memory or disk

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.states) + sum(a.nbytes for a in self.windows.arrays().values())


class LRUCache:
    """Entries by key, the least recently used dropped while the total of their `nbytes` exceeds max_bytes
    (an entry larger than the bound alone is not kept)."""

    def __init__(self, max_bytes: int):
        self.max_bytes, self.total = max_bytes, 0
        self.entries: OrderedDict = OrderedDict()

    def get(self, key):
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
        return entry

    def put(self, key, entry) -> None:
        if key in self.entries:
            self.total -= self.entries.pop(key).nbytes
        if entry.nbytes > self.max_bytes:
            return
        self.entries[key] = entry
        self.total += entry.nbytes
        while self.total > self.max_bytes:
            self.total -= self.entries.popitem(last=False)[1].nbytes

    def __contains__(self, key) -> bool:
        return key in self.entries

    def __len__(self) -> int:
        return len(self.entries)


def sha256_json(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def weights_digest(params: dict) -> str:
    """blake2b of every parameter (name, dtype, shape, bytes), in name order."""
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(params):
        array = np.ascontiguousarray(params[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 of the fast tokenizer's whole definition (vocabulary, normaliser, template)."""
    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ModelIdentity:
    """What a cache folder and its files are built by: the model's name (its folder), split and dtype, and the
    fingerprint of (family, config, weights, tokenizer, dtype, window settings) that must match to reuse them."""

    name: str
    split: str  # "E2/A/E3"
    dtype: str
    fingerprint: str

    def describe(self) -> str:
        return f"{self.name} (split {self.split}, {self.dtype}, fingerprint {self.fingerprint[:12]})"

    def to_dict(self) -> dict:
        return {"format": CACHE_FORMAT, "model": self.name, "split": self.split, "dtype": self.dtype,
                "fingerprint": self.fingerprint}

    @classmethod
    def from_dict(cls, data: dict) -> "ModelIdentity":
        return cls(str(data.get("model", "?")), str(data.get("split", "?")), str(data.get("dtype", "?")),
                   str(data.get("fingerprint", "")))


class DiskCache:
    """Passage entries as `<folder>/<key>.safetensors`, every file written atomically; the folder's cache.json
    names the model it belongs to."""

    def __init__(self, folder, identity: ModelIdentity):
        self.folder, self.identity = Path(folder), identity
        if self.folder.exists() and not self.folder.is_dir():
            raise ServeError(f"--cache-dir {self.folder} is a file; give a folder")
        manifest = self.folder / MANIFEST_FILE
        if manifest.is_file():
            try:
                found = json.loads(manifest.read_text("utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ServeError(f"{manifest}: not a passage cache manifest ({exc})") from None
            if not isinstance(found, dict) or found.get("format") != CACHE_FORMAT:
                raise ServeError(f"{manifest}: not a {CACHE_FORMAT} manifest")
            self.refuse_other(ModelIdentity.from_dict(found), f"--cache-dir {self.folder}")
        check_output_dir(self.folder)

    def refuse_other(self, found: ModelIdentity, where: str) -> None:
        if found.fingerprint != self.identity.fingerprint:
            raise ServeError(f"{where} holds passages encoded by {found.describe()}, not by "
                             f"{self.identity.describe()}; give another --cache-dir or remove it")

    def path(self, key: str) -> Path:
        return self.folder / f"{key}{CACHE_SUFFIX}"

    def load(self, key: str, passage: str, layers: int) -> PassageEntry | None:
        path = self.path(key)
        if not path.is_file():
            return None
        reader = SafetensorsReader(path)
        metadata = reader.metadata()
        if metadata.get("format") != CACHE_FORMAT:
            raise ServeError(f"{path}: not a {CACHE_FORMAT} file")
        self.refuse_other(ModelIdentity.from_dict(metadata), str(path))
        expected = {*WINDOW_ARRAYS, *(f"{STATE_PREFIX}{n}" for n in range(layers))}
        if set(reader) != expected:
            raise WeightsError(f"{path}: holds {', '.join(sorted(set(reader) ^ expected))} unexpectedly "
                               f"or lacks them; a cache of {layers} passage states expected")
        windows = PassageWindows(*(reader[name] for name in WINDOW_ARRAYS))
        states = [reader[f"{STATE_PREFIX}{n}"] for n in range(layers)]
        if any(state.shape[:2] != windows.input_ids.shape for state in states):
            raise WeightsError(f"{path}: passage states do not match the windows' shape {windows.input_ids.shape}")
        return PassageEntry(key, passage, windows, states, "disk")

    def save(self, entry: PassageEntry) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        manifest = self.folder / MANIFEST_FILE
        if not manifest.is_file():
            with atomic_path(manifest) as partial:
                partial.write_text(json.dumps(self.identity.to_dict(), indent=2) + "\n", "utf-8")
        arrays = {**entry.windows.arrays(), **{f"{STATE_PREFIX}{n}": s for n, s in enumerate(entry.states)}}
        save_arrays(self.path(entry.key), arrays, metadata={**self.identity.to_dict(), "key": entry.key})


# ---- the server ----------------------------------------------------------------------------------------------

class PassageServer:
    """A DeFormer QA model folder served with cached passages (see the module's docstring).

    Options are checked and the model's weights read when it is made; the framework is imported at the first
    forward pass.
    """

    def __init__(self, model, backend: str, *, tokenizer=None, dtype: str = "float32", device: str = "cpu",
                 cache_dir=None, max_cache_bytes: int = DEFAULT_CACHE_BYTES, max_seq_length: int | None = None,
                 doc_stride: int = 128, max_answer_length: int = 30, n_best: int = 20, version_2: bool = False,
                 null_score_diff_threshold: float = 0.0, batch_size: int = 32, config_overrides=None, seed: int = 42):
        from backends import FRAMEWORKS

        if backend not in FRAMEWORKS:
            raise ServeError(f"--backend {backend!r}: known {', '.join(FRAMEWORKS)}")
        if dtype not in ("float32", "float64"):
            raise ServeError(f"--dtype {dtype!r}: float32 or float64")
        for option, value in (("batch-size", batch_size), ("max-answer-length", max_answer_length),
                              ("n-best", n_best)):
            if value < 1:
                raise ServeError(f"--{option} must be positive")
        if max_cache_bytes < 0:
            raise ServeError("--max-cache-mb must be at least 0")
        self.backend, self.dtype, self.device, self.batch_size = backend, dtype, device, batch_size
        self.decoding = dict(n_best=n_best, max_answer_length=max_answer_length, version_2=version_2,
                             null_score_diff_threshold=null_score_diff_threshold)
        self.model_name = str(model)
        overrides = parse_overrides(config_overrides) if isinstance(config_overrides, str) else config_overrides
        self.source = load_model(str(model), "qa", None, overrides, seed)
        if self.source.family != FAMILY:
            raise ServeError(f"--model {model} is a {self.source.family} model; predict serves the {FAMILY} family "
                             "(use `python -m tasks evaluate` for the others)")
        if self.source.fresh:
            log(f"note: {len(self.source.fresh)} parameters initialised fresh ({', '.join(self.source.fresh[:4])}"
                f"{' ...' if len(self.source.fresh) > 4 else ''}): these answers are not a trained model's")
        config = self.config = self.source.config
        if tokenizer is None or isinstance(tokenizer, (str, Path)):
            folder = tokenizer or self.source.folder
            if folder is None:
                raise ServeError(f"--model {model} is a preset: give --tokenizer FOLDER")
            try:
                tokenizer = load_tokenizer(folder)
            except FileNotFoundError as exc:
                raise ServeError(str(exc)) from None
        if len(tokenizer) > config.vocab_size:
            raise ServeError(f"the tokenizer has {len(tokenizer)} tokens, the model's vocab_size is "
                             f"{config.vocab_size}")
        room = config.max_positions - config.max_question_length  # passage positions start at max_question_length
        length = min(DEFAULT_SEQ_LENGTH, room) if max_seq_length is None else max_seq_length
        if length > room:
            raise ServeError(f"--max-seq-length {length}: the model's {config.max_positions} positions leave "
                             f"{room} for the passage after its max_question_length {config.max_question_length}")
        self.tokens = Tokens(tokenizer, config.max_question_length, length, doc_stride)
        self.layers = config.passage_layers + 1  # the embedding output and layers 1..E2+A
        self.memory = LRUCache(max_cache_bytes)
        self.identity_settings = {"family": FAMILY, "config": config.to_dict(), "dtype": dtype,
                                  "tokenizer": tokenizer_fingerprint(tokenizer),
                                  "max_seq_length": length, "doc_stride": doc_stride}
        self.disk = None if cache_dir is None else DiskCache(cache_dir, self.identity())
        # what a passage's key hashes beside its text: the whole identity for files, the settings in memory
        self.fingerprint = self.disk.identity.fingerprint if self.disk else sha256_json(self.identity_settings)
        self.counts = {"memory": 0, "disk": 0, "computed": 0}
        self._runner = None

    def identity(self) -> ModelIdentity:
        """The model's identity for cache files (hashes the weights: called once, for a cache folder)."""
        fingerprint = sha256_json({**self.identity_settings, "weights": weights_digest(self.source.params)})
        return ModelIdentity(self.model_name, self.config.split, self.dtype, fingerprint)

    def key(self, passage: str) -> str:
        return sha256_json({"passage": passage, "model": self.fingerprint})

    # ---- checks before any framework loads ----

    def check(self, examples) -> None:
        """ServeError for an empty passage or a question too long for the model, naming the question."""
        for context, group in by_passage(examples).items():
            try:
                self.tokens.passage(context)
            except ServeError as exc:
                raise ServeError(f"question {group[0].qas_id!r}: {exc}") from None
            self.tokens.questions([e.question for e in group], [e.qas_id for e in group])

    # ---- the model ----

    @property
    def runner(self):
        if self._runner is None:
            from tasks.train import runner_class

            self._runner = runner_class(self.backend)(FAMILY, self.config, "qa", self.source.params,
                                                      dtype=self.dtype, device=self.device)
            self.adapter = framework(self.backend)
        return self._runner

    def placement(self):
        """TensorFlow places ops by a device scope (its Runner's forward opens one); torch's ops follow their
        tensors' device and paddle's a global device the Runner set."""
        if self.backend != "tf":
            return contextlib.nullcontext()
        import tensorflow as tf

        return tf.device(self.runner.device)

    def _call(self, method, arrays: dict, **options) -> dict:
        tensors = self.runner.to_tensors(arrays)
        with self.adapter.no_grad(), self.placement(), self.adapter.final_outputs_only():
            return method(**tensors, **options)

    def _encode(self, windows: PassageWindows) -> list:
        outputs = self._call(self.runner.model.encode_passage, windows.model_inputs(slice(None)))
        states = [self.adapter.to_numpy(state) for state in outputs["passage_states"]]
        if len(states) != self.layers:
            raise RuntimeError(f"encode_passage returned {len(states)} states; E2 + A + 1 = {self.layers} expected")
        return states

    def _passage_cache(self, entry: PassageEntry, window: int) -> dict:
        """The model's passage_cache of one of an entry's windows: its states and mask as tensors ([1, Tp, ...]),
        read by every question row of a batch (passage_index zeros). One window per call: the model's folded
        assist layers attend over every passage a cache holds, so a long passage's other windows would only
        add keys that each question masks."""
        rows = slice(window, window + 1)
        states = {f"{STATE_PREFIX}{n}": state[rows] for n, state in enumerate(entry.states)}
        tensors = self.runner.to_tensors({"mask": entry.windows.attention_mask[rows], **states})
        return {"passage_states": [tensors[f"{STATE_PREFIX}{n}"] for n in range(len(entry.states))],
                "passage_attention_mask": tensors["mask"]}

    def encode_passages(self, passages) -> list[PassageEntry]:
        """Each passage's entry: from memory, from the cache folder, or encoded (then kept in both)."""
        entries = []
        for passage in passages:
            key = self.key(passage)
            entry = self.memory.get(key)
            if entry is not None:
                entry.source = "memory"
            elif self.disk is not None and (entry := self.disk.load(key, passage, self.layers)) is not None:
                self.memory.put(key, entry)
            else:
                windows = self.tokens.passage(passage)
                entry = PassageEntry(key, passage, windows, self._encode(windows))
                if self.disk is not None:
                    self.disk.save(entry)
                self.memory.put(key, entry)
            self.counts[entry.source] += 1
            entries.append(entry)
        return entries

    def _rows(self, questions: dict, windows: PassageWindows):
        count, per = len(questions["question_input_ids"]), len(windows)
        return np.repeat(np.arange(count), per), np.tile(np.arange(per), count)

    def _logits(self, questions: dict, windows: PassageWindows, rows_q, rows_w, entry=None) -> tuple:
        """[rows, Tq + Tp] start and end logits: with `entry` (a cached passage) the rows of each window in turn
        against that window's states (_passage_cache), else one-shot; the per-layer outputs are not collected
        (output_layers=False)."""
        groups = ([(None, np.arange(len(rows_q)))] if entry is None
                  else [(window, np.flatnonzero(rows_w == window)) for window in range(len(windows))])
        parts, order = [], []
        for window, group in groups:
            cache = None if window is None else self._passage_cache(entry, window)
            for begin in range(0, len(group), self.batch_size):
                rows = group[begin:begin + self.batch_size]
                arrays = {name: array[rows_q[rows]] for name, array in questions.items()}
                if cache is None:
                    outputs = self._call(self.runner.model, {**arrays, **windows.model_inputs(rows_w[rows])},
                                         output_layers=False)
                else:
                    index = self.runner.to_tensors({PASSAGE_INDEX: np.zeros(len(rows), np.int64)})[PASSAGE_INDEX]
                    outputs = self._call(self.runner.model, arrays, passage_cache={**cache, PASSAGE_INDEX: index},
                                         output_layers=False)
                parts.append([self.adapter.to_numpy(outputs[name]) for name in ("start_logits", "end_logits")])
                order.append(rows)
        back = np.argsort(np.concatenate(order))  # the rows' own order (window by window above)
        return tuple(np.concatenate([part[n] for part in parts])[back] for n in (0, 1))

    def logits_with_cache(self, entry: PassageEntry, questions, ids=None) -> tuple:
        """(SquadFeatures, start_logits, end_logits) of the questions against a cached passage."""
        arrays = self.tokens.questions(questions, ids)
        rows_q, rows_w = self._rows(arrays, entry.windows)
        start, end = self._logits(arrays, entry.windows, rows_q, rows_w, entry)
        return joint_features(arrays, entry.windows, rows_q, rows_w, rows_q), start, end

    def logits_one_shot(self, passage: str, questions, ids=None) -> tuple:
        """(SquadFeatures, start_logits, end_logits) of the full model on [question; passage window]."""
        arrays, windows = self.tokens.questions(questions, ids), self.tokens.passage(passage)
        rows_q, rows_w = self._rows(arrays, windows)
        start, end = self._logits(arrays, windows, rows_q, rows_w)
        return joint_features(arrays, windows, rows_q, rows_w, rows_q), start, end

    def _decode(self, passage, questions, ids, logits) -> tuple[dict, dict]:
        ids = [str(n) for n in range(len(questions))] if ids is None else [str(i) for i in ids]
        examples = [SquadExample(i, "", q, passage, (), False) for i, q in zip(ids, questions)]
        return postprocess_squad(examples, *logits, **self.decoding)

    def answer_with_cache(self, passage, questions, ids=None) -> tuple[dict, dict]:
        """(answers, null_odds) by question id (default "0", "1", ...) against a passage (text, encoded or
        found cached, or an entry of encode_passages)."""
        entry = passage if isinstance(passage, PassageEntry) else self.encode_passages([passage])[0]
        return self._decode(entry.passage, questions, ids, self.logits_with_cache(entry, questions, ids))

    def answer_one_shot(self, passage: str, questions, ids=None) -> tuple[dict, dict]:
        """(answers, null_odds) of the full model, no cache."""
        return self._decode(passage, questions, ids, self.logits_one_shot(passage, questions, ids))

    def answer(self, passage: str, questions) -> list[str]:
        """The answer to each question (v2.0: "" for no answer), the passage encoded once (or found cached)."""
        answers, _ = self.answer_with_cache(passage, questions)
        return [answers[str(n)] for n in range(len(questions))]


# ---- python -m tasks predict ----------------------------------------------------------------------------------

def write_json_atomically(path: Path, data) -> None:
    with atomic_path(path) as partial:
        partial.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", "utf-8")


class PredictJob:
    """`python -m tasks predict`: every check (options, input file, passages, question lengths, output and cache
    folders) before a framework loads; run() answers each passage's questions and writes the predictions."""

    def __init__(self, args):
        self.args = args
        self.output = Path(args.output)
        if self.output.is_dir():
            raise ServeError(f"--output {self.output} is a folder; give a file name")
        check_output_dir(self.output.parent)
        self.examples = read_questions(args.input)
        if args.cache_dir and not args.cache_passages:
            raise ServeError("--cache-dir keeps encoded passages: give --cache-passages too")
        self.server = PassageServer(
            args.model, args.backend, tokenizer=args.tokenizer, dtype=args.dtype, device=args.device,
            cache_dir=args.cache_dir, max_cache_bytes=int(args.max_cache_mb * (1 << 20)),
            max_seq_length=args.max_seq_length, doc_stride=args.doc_stride,
            max_answer_length=args.max_answer_length, n_best=args.n_best,
            version_2=args.version_2_with_negative, null_score_diff_threshold=args.null_score_diff_threshold,
            batch_size=args.batch_size, config_overrides=args.config_overrides, seed=args.seed)
        try:
            self.server.check(self.examples)
        except ServeError as exc:
            raise ServeError(f"{args.input}: {exc}") from None
        if args.null_odds_output:
            check_output_dir(Path(args.null_odds_output).parent)

    def run(self) -> dict:
        server, answers, null_odds = self.server, {}, {}
        groups = by_passage(self.examples)
        for passage, group in groups.items():
            questions, ids = [e.question for e in group], [e.qas_id for e in group]
            if self.args.cache_passages:
                found, odds = server.answer_with_cache(passage, questions, ids)
            else:
                found, odds = server.answer_one_shot(passage, questions, ids)
            answers.update(found)
            null_odds.update(odds)
        write_json_atomically(self.output, answers)
        if self.args.null_odds_output:
            write_json_atomically(Path(self.args.null_odds_output), null_odds)
        results = {"predict_questions": len(self.examples), "predict_passages": len(groups),
                   "predictions_file": str(self.output)}
        if self.args.cache_passages:
            results.update({f"passages_{source}": count for source, count in server.counts.items()})
        return results

