"""SQuAD v1.1/v2.0: JSON reader, sliding-window features, n-best span decoding and the official scores.

Windows come from a fast tokenizer (`return_overflowing_tokens`); `doc_stride` is the number of tokens
consecutive windows share (the tokenizer's `stride`, as in transformers' run_qa). Positions of answers
outside a window, and of unanswerable questions, point at the window's CLS token.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path

import numpy as np

from tasks.data.features import TOKEN_FEATURES, require_fast
from tasks.data.files import DataError, describe, no_examples, note, parse_json, read_text, require

PREDICTIONS_FILE = "predictions.json"
NULL_ODDS_FILE = "null_odds.json"


@dataclass(frozen=True)
class SquadAnswer:
    text: str
    start: int  # character offset in the context


@dataclass(frozen=True)
class SquadExample:
    """One question on one paragraph; answers is empty for unanswerable (v2.0) questions."""

    qas_id: str
    title: str
    question: str
    context: str
    answers: tuple[SquadAnswer, ...]
    is_impossible: bool


def read_squad(path: str | Path) -> list[SquadExample]:
    """Read a SQuAD v1.1 or v2.0 JSON file (gzipped too).

    DataError names the file and the JSON path (data[3].paragraphs[0].qas[2]) of a bad entry. An
    answer_start that does not point at its answer text is moved to the nearest place where the text
    occurs in the context (one note per file gives the count); an answer text the context does not
    hold at all is an error, since no training label can be made from it.
    """
    path = Path(path)
    dataset = parse_json(path, read_text(path))
    if not isinstance(dataset, dict) or "data" not in dataset:
        raise DataError(path, None, f"no 'data' list; not a SQuAD file (found {describe(dataset)})")
    articles = require(dataset["data"], list, path, "data", "data")
    examples: list[SquadExample] = []
    seen: set[str] = set()
    moved = 0
    for a, article in enumerate(articles):
        where = f"data[{a}]"
        require(article, dict, path, where, "an article")
        title = require(article.get("title", ""), str, path, where, "the title", "title")
        for p, paragraph in enumerate(require(_field(article, "paragraphs", path, where), list, path,
                                              f"{where}.paragraphs", "paragraphs")):
            where = f"data[{a}].paragraphs[{p}]"
            require(paragraph, dict, path, where, "a paragraph")
            context = require(_field(paragraph, "context", path, where), str, path, where, "the context", "context")
            if not context.strip():
                raise DataError(path, f"{where}.context", "the context is empty")
            for q, qa in enumerate(require(_field(paragraph, "qas", path, where), list, path, where,
                                           "qas", "qas")):
                where = f"data[{a}].paragraphs[{p}].qas[{q}]"
                require(qa, dict, path, where, "a question")
                qas_id = str(require(_field(qa, "id", path, where), (str, int), path, where, "the id", "id"))
                if not qas_id or qas_id in seen:
                    raise DataError(path, f"{where}.id", f"missing or duplicate id {qas_id!r}")
                seen.add(qas_id)
                question = require(_field(qa, "question", path, where), str, path, where,
                                   "the question", "question")
                is_impossible = require(qa.get("is_impossible", False), bool, path, where,
                                        "is_impossible", "is_impossible")
                answers = []
                for n, answer in enumerate(require(qa.get("answers", []), list, path, where,
                                                   "answers", "answers")):
                    at = f"{where}.answers[{n}]"
                    require(answer, dict, path, at, "an answer")
                    text = require(_field(answer, "text", path, at), str, path, at, "the answer text", "text")
                    start = require(_field(answer, "answer_start", path, at), int, path, at,
                                    "answer_start", "answer_start")
                    if not text.strip():  # a blank answer gives no token span to train on
                        raise DataError(path, f"{at}.text", "the answer text is empty or blank")
                    found = _answer_start(context, text, start)
                    if found is None:
                        raise DataError(path, f"{at}", f"question {qas_id!r}: the answer text {describe(text)} "
                                                       "does not occur in the context")
                    moved += found != start
                    answers.append(SquadAnswer(text, found))
                examples.append(SquadExample(qas_id, title, question, context,
                                             () if is_impossible else tuple(answers), is_impossible))
    if not examples:
        raise no_examples(path, "questions")
    if moved:
        note(f"{path}: {moved} answer_start values did not point at their answer text; each was moved to the "
             "nearest place the text occurs in the context")
    return examples


def _field(record: dict, key: str, path: Path, where: str):
    """record[key], or DataError naming the JSON path and the missing key."""
    if key not in record:
        raise DataError(path, where, f"missing key {key!r}")
    return record[key]


def _answer_start(context: str, text: str, start: int) -> int | None:
    """`start` when the answer text is there, else the start of the occurrence nearest to it (None: none)."""
    if start >= 0 and context[start:start + len(text)] == text:
        return start
    position = context.find(text)  # every occurrence, overlapping ones too
    occurrences = []
    while position >= 0:
        occurrences.append(position)
        position = context.find(text, position + 1)
    return min(occurrences, key=lambda found: (abs(found - start), found)) if occurrences else None


@dataclass(frozen=True)
class SquadFeatures:
    """Sliding windows over the examples' contexts.

    inputs: int64 input_ids, token_type_ids, attention_mask [n, seq] and start_positions, end_positions [n]
    (first gold answer, or cls_index). example_index [n] gives each window's example; offsets [n, seq, 2]
    the character span of each context token in its context, -1 for question, special and padding tokens.
    """

    inputs: dict[str, np.ndarray]
    example_index: np.ndarray
    offsets: np.ndarray
    cls_index: np.ndarray

    def __len__(self) -> int:
        return len(self.example_index)


def _truncated_questions(tokenizer, questions: list[str], max_query_length: int) -> list[str]:
    """Questions cut after their max_query_length-th token (leading whitespace removed)."""
    questions = [question.lstrip() for question in questions]
    spans = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    return [
        question if len(span) <= max_query_length else question[: span[max_query_length - 1][1]]
        for question, span in zip(questions, spans)
    ]


def answer_positions(offsets: np.ndarray, start_char: int, end_char: int, cls: int) -> tuple[int, int]:
    """Token positions of the characters [start_char, end_char) in one window, or (cls, cls) if not inside."""
    context = np.flatnonzero(offsets[:, 0] >= 0)
    if offsets[context[0], 0] > start_char or offsets[context[-1], 1] < end_char:
        return cls, cls
    start = context[np.flatnonzero(offsets[context, 1] > start_char)[0]]
    end = context[np.flatnonzero(offsets[context, 0] < end_char)[-1]]
    return int(start), int(end)


def squad_features(
    examples: Sequence[SquadExample],
    tokenizer,
    max_seq_length: int = 384,
    doc_stride: int = 128,
    max_query_length: int = 64,
) -> SquadFeatures:
    """Tokenize (question, context) pairs into windows of max_seq_length tokens, padded."""
    require_fast(tokenizer)
    encoded = tokenizer(
        _truncated_questions(tokenizer, [example.question for example in examples], max_query_length),
        [example.context for example in examples],
        truncation="only_second",
        max_length=max_seq_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding="max_length",
        return_token_type_ids=True,
        return_attention_mask=True,
    )
    inputs = {name: np.asarray(encoded[name], dtype=np.int64) for name in TOKEN_FEATURES}
    example_index = np.asarray(encoded["overflow_to_sample_mapping"], dtype=np.int64)
    count = len(example_index)
    offsets = np.full((count, max_seq_length, 2), -1, dtype=np.int64)
    cls_index = np.empty(count, dtype=np.int64)
    start_positions = np.empty(count, dtype=np.int64)
    end_positions = np.empty(count, dtype=np.int64)
    for window in range(count):
        context_tokens = [i for i, sequence in enumerate(encoded.sequence_ids(window)) if sequence == 1]
        offsets[window, context_tokens] = np.asarray(encoded["offset_mapping"][window], dtype=np.int64)[context_tokens]
        cls_index[window] = int(np.flatnonzero(inputs["input_ids"][window] == tokenizer.cls_token_id)[0])
        example = examples[example_index[window]]
        if example.answers:
            answer = example.answers[0]
            start_positions[window], end_positions[window] = answer_positions(
                offsets[window], answer.start, answer.start + len(answer.text), cls_index[window]
            )
        else:
            start_positions[window] = end_positions[window] = cls_index[window]
    inputs["start_positions"] = start_positions
    inputs["end_positions"] = end_positions
    return SquadFeatures(inputs, example_index, offsets, cls_index)


def postprocess_squad(
    examples: Sequence[SquadExample],
    features: SquadFeatures,
    start_logits,
    end_logits,
    n_best: int = 20,
    max_answer_length: int = 30,
    version_2: bool = False,
    null_score_diff_threshold: float = 0.0,
) -> tuple[dict[str, str], dict[str, float]]:
    """Decode answers from [n_windows, seq] logits: (predictions, null_odds), keyed by question id.

    Candidate spans pair the n_best highest start and end logits of each window, stay inside the context
    and are at most max_answer_length tokens long; the best-scoring span over all windows wins. null_odds
    is the lowest CLS score (start + end logit) minus the best span score (inf when no span is valid).
    With version_2, the answer is "" when null_odds exceeds null_score_diff_threshold.
    """
    start_logits, end_logits = np.asarray(start_logits, np.float64), np.asarray(end_logits, np.float64)
    expected = features.offsets.shape[:2]  # [windows, the sequence the logits cover]
    if start_logits.shape != expected or end_logits.shape != expected:
        raise ValueError(f"logits have shapes {start_logits.shape}, {end_logits.shape}; features {expected}")
    windows_of: dict[int, list[int]] = {}
    for window, example in enumerate(features.example_index.tolist()):
        windows_of.setdefault(example, []).append(window)

    predictions: dict[str, str] = {}
    null_odds: dict[str, float] = {}
    for index, example in enumerate(examples):
        best_score, best_text, null_score = -np.inf, "", np.inf
        for window in windows_of.get(index, []):
            starts, ends, spans = start_logits[window], end_logits[window], features.offsets[window]
            cls = features.cls_index[window]
            null_score = min(null_score, starts[cls] + ends[cls])
            best_ends = np.argsort(-ends, kind="stable")[:n_best]
            for start in np.argsort(-starts, kind="stable")[:n_best]:
                for end in best_ends:
                    if spans[start, 0] < 0 or spans[end, 0] < 0 or not 0 <= end - start < max_answer_length:
                        continue
                    score = starts[start] + ends[end]
                    if score > best_score:
                        best_score, best_text = score, example.context[spans[start, 0] : spans[end, 1]]
        null_odds[example.qas_id] = float(null_score - best_score)
        abstain = version_2 and null_odds[example.qas_id] > null_score_diff_threshold
        predictions[example.qas_id] = "" if abstain else best_text
    return predictions, null_odds


def write_squad_outputs(
    output_dir: str | Path, predictions: Mapping[str, str], null_odds: Mapping[str, float] | None = None
) -> None:
    """Write predictions.json (and null_odds.json, the official script's --na-prob-file) into output_dir."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    outputs = {PREDICTIONS_FILE: predictions}
    if null_odds is not None:
        outputs[NULL_ODDS_FILE] = null_odds
    for name, values in outputs.items():
        (output_dir / name).write_text(json.dumps(dict(values), indent=2, ensure_ascii=False) + "\n", "utf-8")


# ---- official scoring --------------------------------------------------------------------------------

ARTICLES = re.compile(r"\b(a|an|the)\b")
PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation, drop the articles a/an/the, collapse whitespace."""
    text = "".join(char for char in text.lower() if char not in PUNCTUATION)
    return " ".join(ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str, both_empty: float = 1.0) -> float:
    """F1 of the normalised tokens. An empty side scores 0, two empty sides score `both_empty`
    (v2.0 counts that as a match, v1.1 as 0)."""
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not predicted or not expected:
        return both_empty if not predicted and not expected else 0.0
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def squad_v1_scores(examples: Sequence[SquadExample], predictions: Mapping[str, str]) -> dict[str, float]:
    """Official v1.1 scores in percent: exact_match and f1, each the max over gold answers.

    A question without a prediction scores 0.
    """
    exact, f1 = [], []
    for example in examples:
        if not example.answers:
            raise ValueError(f"question {example.qas_id!r} has no gold answer; use squad_v2_scores")
        prediction = predictions.get(example.qas_id)
        golds = [answer.text for answer in example.answers]
        exact.append(0.0 if prediction is None else max(exact_match(prediction, gold) for gold in golds))
        f1.append(0.0 if prediction is None else max(token_f1(prediction, gold, both_empty=0.0) for gold in golds))
    return {"exact_match": 100.0 * float(np.mean(exact)), "f1": 100.0 * float(np.mean(f1))}


def _best_threshold(
    raw: dict[str, float], na_probs: Mapping[str, float], has_answer: dict[str, bool], predictions: Mapping[str, str]
) -> tuple[float, float]:
    """Best score (percent) over no-answer thresholds t (abstain where na_prob > t) and its t.

    Starts from abstaining everywhere (t = 0.0 as the official script reports it), then answers the
    questions in increasing na_prob, one group of equal na_probs at a time.
    """
    score = best = float(sum(not has for has in has_answer.values()))
    threshold = 0.0
    ordered = sorted(raw, key=lambda qas_id: na_probs[qas_id])
    for probability, group in groupby(ordered, key=lambda qas_id: na_probs[qas_id]):
        for qas_id in group:
            if has_answer[qas_id]:
                score += raw[qas_id]
            elif predictions.get(qas_id):
                score -= 1.0
        if score > best:
            best, threshold = score, float(probability)
    return 100.0 * best / len(raw), threshold


def squad_v2_scores(
    examples: Sequence[SquadExample],
    predictions: Mapping[str, str],
    na_probs: Mapping[str, float] | None = None,
    na_prob_thresh: float = 1.0,
) -> dict[str, float]:
    """Official v2.0 scores in percent: exact, f1, total, HasAns_* and NoAns_* breakdowns.

    Where na_probs[qid] > na_prob_thresh the question counts as answered "no answer". With na_probs
    (e.g. null_odds) also best_exact/best_f1 and the thresholds that reach them. A question without a
    prediction scores 0.
    """
    raw_exact: dict[str, float] = {}
    raw_f1: dict[str, float] = {}
    has_answer: dict[str, bool] = {}
    for example in examples:
        qas_id = example.qas_id
        has_answer[qas_id] = bool(example.answers)
        golds = [answer.text for answer in example.answers if normalize_answer(answer.text)] or [""]
        prediction = predictions.get(qas_id)
        raw_exact[qas_id] = 0.0 if prediction is None else max(exact_match(prediction, gold) for gold in golds)
        raw_f1[qas_id] = 0.0 if prediction is None else max(token_f1(prediction, gold) for gold in golds)
    probabilities = {qas_id: 0.0 for qas_id in has_answer} if na_probs is None else na_probs
    missing = [qas_id for qas_id in has_answer if qas_id not in probabilities]
    if missing:
        raise ValueError(f"na_probs lacks {len(missing)} question ids, e.g. {missing[0]!r}")

    def thresholded(raw: dict[str, float]) -> dict[str, float]:
        return {
            qas_id: float(not has_answer[qas_id]) if probabilities[qas_id] > na_prob_thresh else value
            for qas_id, value in raw.items()
        }

    exact, f1 = thresholded(raw_exact), thresholded(raw_f1)
    results: dict[str, float] = {}
    for prefix, selected in (("", has_answer), ("HasAns_", [q for q, h in has_answer.items() if h]),
                             ("NoAns_", [q for q, h in has_answer.items() if not h])):
        if selected:
            results[f"{prefix}exact"] = 100.0 * float(np.mean([exact[q] for q in selected]))
            results[f"{prefix}f1"] = 100.0 * float(np.mean([f1[q] for q in selected]))
            results[f"{prefix}total"] = len(selected)
    if na_probs is not None:
        for name, raw in (("exact", raw_exact), ("f1", raw_f1)):
            results[f"best_{name}"], results[f"best_{name}_thresh"] = _best_threshold(
                raw, na_probs, has_answer, predictions
            )
    return results
