"""GLUE: the nine tasks' official TSV layouts as data, one reader, features and the submission writer.

Official GLUE files are tab-separated without quoting (a `"` is an ordinary character). Columns are found
by header name, so a task's train, dev and test files may differ in columns (MNLI dev has label1..label5,
test files have no label column). CoLA's train/dev files have no header. The Hugging Face export form
(`<text columns>\\tlabel\\tidx`, integer labels, csv quoting) is recognised by its header.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.data.features import PairExample, pair_features
from tasks.data.files import DataError, file_stem, no_examples, read_text, text_lines


@dataclass(frozen=True)
class GlueTask:
    """How one GLUE task is stored, labelled and scored."""

    name: str
    directory: str  # folder name in the GLUE download
    files: Mapping[str, str]  # split -> file name inside the task folder
    text_columns: tuple[str, ...]  # header names of text_a (and text_b)
    label_column: str  # header name of the gold label; test files lack it
    labels: tuple[str, ...] | None  # label strings in id order; None: regression
    metrics: tuple[str, ...]  # names in tasks.metrics.METRICS
    main_metric: str  # the GLUE score's value for the task
    submission_file: str  # file name the GLUE server expects
    hf_text_columns: tuple[str, ...]  # text columns of the Hugging Face export
    hf_labels: tuple[str, ...] | None  # GLUE label of each Hugging Face class id
    headerless_columns: tuple[str, ...] | None = None  # columns of files written without a header

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)


SPLIT_FILES = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}
BINARY = ("0", "1")
TWO_WAY_NLI = ("entailment", "not_entailment")
PAIR = ("sentence1", "sentence2")
ACC = ("acc",)
ACC_F1 = ("acc", "f1", "acc_and_f1")

GLUE_TASKS: dict[str, GlueTask] = {
    task.name: task
    for task in (
        GlueTask("cola", "CoLA", SPLIT_FILES, ("sentence",), "label", BINARY, ("mcc",), "mcc", "CoLA.tsv",
                 ("sentence",), BINARY, headerless_columns=("source", "label", "author_label", "sentence")),
        GlueTask("sst-2", "SST-2", SPLIT_FILES, ("sentence",), "label", BINARY, ACC, "acc", "SST-2.tsv",
                 ("sentence",), BINARY),
        GlueTask("mrpc", "MRPC", SPLIT_FILES, ("#1 String", "#2 String"), "Quality", BINARY, ACC_F1, "acc_and_f1",
                 "MRPC.tsv", PAIR, BINARY),
        GlueTask("sts-b", "STS-B", SPLIT_FILES, PAIR, "score", None, ("pearson", "spearmanr", "corr"), "corr",
                 "STS-B.tsv", PAIR, None),
        GlueTask("qqp", "QQP", SPLIT_FILES, ("question1", "question2"), "is_duplicate", BINARY, ACC_F1,
                 "acc_and_f1", "QQP.tsv", ("question1", "question2"), BINARY),
        GlueTask("mnli", "MNLI", {"train": "train.tsv", "dev": "dev_matched.tsv", "test": "test_matched.tsv"},
                 PAIR, "gold_label", ("contradiction", "entailment", "neutral"), ACC, "acc", "MNLI-m.tsv",
                 ("premise", "hypothesis"), ("entailment", "neutral", "contradiction")),
        GlueTask("mnli-mm", "MNLI",
                 {"train": "train.tsv", "dev": "dev_mismatched.tsv", "test": "test_mismatched.tsv"},
                 PAIR, "gold_label", ("contradiction", "entailment", "neutral"), ACC, "acc", "MNLI-mm.tsv",
                 ("premise", "hypothesis"), ("entailment", "neutral", "contradiction")),
        GlueTask("qnli", "QNLI", SPLIT_FILES, ("question", "sentence"), "label", TWO_WAY_NLI, ACC, "acc",
                 "QNLI.tsv", ("question", "sentence"), TWO_WAY_NLI),
        GlueTask("rte", "RTE", SPLIT_FILES, PAIR, "label", TWO_WAY_NLI, ACC, "acc", "RTE.tsv", PAIR, TWO_WAY_NLI),
        GlueTask("wnli", "WNLI", SPLIT_FILES, PAIR, "label", BINARY, ACC, "acc", "WNLI.tsv", PAIR, BINARY),
    )
}
TASK_ALIASES = {"sst2": "sst-2", "stsb": "sts-b", "mnli-m": "mnli", "mnli_mismatched": "mnli-mm"}


def canonical_task_name(name: str) -> str:
    """A task name as this project writes it: lower case, transformers' GLUE names ("sst2", "stsb") mapped to ours."""
    key = name.lower()
    return TASK_ALIASES.get(key, key)


def glue_task(task: str | GlueTask) -> GlueTask:
    """The GlueTask for a name such as "cola", "SST-2", "sst2", "mnli-mm" (a GlueTask passes through)."""
    if isinstance(task, GlueTask):
        return task
    key = canonical_task_name(task)
    if key not in GLUE_TASKS:
        raise KeyError(f"unknown GLUE task {task!r}; known: {', '.join(GLUE_TASKS)}")
    return GLUE_TASKS[key]


@dataclass(frozen=True)
class _Layout:
    """Where text and label sit in one file and how labels are written."""

    columns: tuple[str, ...]
    text_columns: tuple[str, ...]
    has_header: bool
    quoted: bool  # csv quoting (Hugging Face export) instead of plain tab splitting
    label_column: str | None  # None: the file is unlabelled
    label_ids: tuple[str, ...] | None  # labels are stored as ids into this tuple (Hugging Face export)


def _detect_layout(task: GlueTask, first_row: list[str], path: Path) -> _Layout:
    hf_header = (*task.hf_text_columns, "label", "idx")
    if tuple(first_row) == hf_header:
        return _Layout(hf_header, task.hf_text_columns, True, True, "label", task.hf_labels)
    if all(column in first_row for column in task.text_columns):
        label_column = task.label_column if task.label_column in first_row else None
        return _Layout(tuple(first_row), task.text_columns, True, False, label_column, None)
    if task.headerless_columns and len(first_row) == len(task.headerless_columns):
        return _Layout(task.headerless_columns, task.text_columns, False, False, task.label_column, None)
    raise DataError(path, 1, f"not a GLUE {task.name} header: {first_row!r} "
                             f"(expected columns {list(task.text_columns)} or {list(hf_header)})")


def _rows(path: Path, text: str, quoted: bool) -> Iterator[tuple[int, list[str]]]:
    """(1-based line number, fields) for each non-blank line."""
    if quoted:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t")
        try:
            for fields in reader:
                if fields:
                    yield reader.line_num, fields
        except csv.Error as exc:  # e.g. a field over csv's size limit: an unclosed quote runs to the end
            raise DataError(path, reader.line_num, f"not a tab-separated row ({exc})") from None
        return
    for line_number, line in enumerate(text_lines(text), start=1):
        if line:
            yield line_number, line.split("\t")


def _parse_label(value: str, task: GlueTask, layout: _Layout) -> str | float | None:
    """The label of one row; ValueError (the caller adds file and line) for one the task does not know."""
    if layout.label_ids is not None:
        if value == "-1":  # Hugging Face writes -1 for unlabelled test rows
            return None
        if value.isdigit() and int(value) < len(layout.label_ids):
            return layout.label_ids[int(value)]
        raise ValueError(f"unknown label id {value!r} for {task.name}; expected 0..{len(layout.label_ids) - 1}")
    if task.labels is None:
        try:
            score = float(value)
        except ValueError:
            raise ValueError(f"{task.name} score {value!r} is not a number") from None
        if not math.isfinite(score):  # float() reads "nan" and "inf": a NaN target poisons training
            raise ValueError(f"{task.name} score {value!r} is not a finite number")
        return None if layout.quoted and score == -1 else score
    if value not in task.labels:
        raise ValueError(f"unknown label {value!r} for {task.name}; expected one of {list(task.labels)}")
    return value


def read_glue_file(path: str | Path, task: str | GlueTask) -> list[PairExample]:
    """Read one GLUE file (train, dev or unlabelled test; gzipped too) of `task` into PairExamples.

    guid is "<file stem>-<0-based row>". Raises DataError naming the file and 1-based line for a row with
    the wrong number of fields or an unknown label, and for a file without rows.
    """
    task = glue_task(task)
    path = Path(path)
    text = read_text(path)
    if not text.strip():
        raise no_examples(path, "rows (an empty file)")
    first_line = next(iter(text_lines(text)), "")
    layout = _detect_layout(task, first_line.split("\t"), path)
    text_index = [layout.columns.index(column) for column in layout.text_columns]
    label_index = None if layout.label_column is None else layout.columns.index(layout.label_column)

    examples = []
    rows = _rows(path, text, layout.quoted)
    if layout.has_header:
        next(rows)
    stem = file_stem(path)
    for line_number, fields in rows:
        if len(fields) != len(layout.columns):
            raise DataError(path, line_number, f"expected {len(layout.columns)} tab-separated fields "
                                               f"{list(layout.columns)}, found {len(fields)}")
        texts = [fields[i] for i in text_index]
        try:
            label = None if label_index is None else _parse_label(fields[label_index], task, layout)
        except ValueError as exc:
            raise DataError(path, line_number, str(exc)) from None
        examples.append(PairExample(f"{stem}-{len(examples)}", texts[0], texts[1] if len(texts) > 1 else None, label))
    if not examples:
        raise no_examples(path, "rows (a header alone, or an empty file)")
    return examples


def read_glue(task: str | GlueTask, data_dir: str | Path, split: str) -> list[PairExample]:
    """Read split ("train", "dev", "test") of `task` from its folder (e.g. glue_data/MNLI)."""
    task = glue_task(task)
    if split not in task.files:
        raise KeyError(f"unknown split {split!r} for {task.name}; known: {', '.join(task.files)}")
    return read_glue_file(Path(data_dir) / task.files[split], task)


def glue_features(
    examples: Sequence[PairExample], task: str | GlueTask, tokenizer, max_seq_length: int, inputs=None
) -> dict[str, np.ndarray]:
    """The model's inputs (default int64 input_ids/token_type_ids/attention_mask [n, max_seq_length]) and
    labels (ids, or float32 scores)."""
    return pair_features(examples, tokenizer, max_seq_length, glue_task(task).labels, inputs)


def write_glue_predictions(path: str | Path, task: str | GlueTask, predictions: Sequence) -> None:
    """Write GLUE submission TSV `index<TAB>prediction`: label strings by id, or STS-B scores (3 decimals).

    predictions are in test-file order; task.submission_file is the name the GLUE server expects.
    """
    task = glue_task(task)
    values = np.asarray(predictions)
    if task.is_regression:
        lines = [f"{i}\t{float(value):.3f}" for i, value in enumerate(values)]
    else:
        if values.size and not np.issubdtype(values.dtype, np.integer):
            raise TypeError(f"{task.name} predictions must be label ids, got dtype {values.dtype}")
        if values.size and not (0 <= values.min() and values.max() < len(task.labels)):
            raise ValueError(f"{task.name} label ids must lie in 0..{len(task.labels) - 1}")
        lines = [f"{i}\t{task.labels[value]}" for i, value in enumerate(values)]
    Path(path).write_text("".join(f"{line}\n" for line in ["index\tprediction", *lines]), encoding="utf-8")
