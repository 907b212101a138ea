"""What each task trains and evaluates on, framework-free: files, features, head, loss, decoding, metrics.

`make_task(name, ...)` returns one of GlueTask (the nine GLUE tasks), BoolQTask, RaceTask, SquadTask, MlmTask
(masked language modelling on plain text). Each turns a split into a `Split` of numpy features, decodes a
model's outputs into predictions, scores them, and writes them in the form the task's leaderboard or official
script reads.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from backends._fw.parallel import gather_rows
from backends.errors import BadInput
from tasks.data.boolq import BOOLQ_LABELS, boolq_features, read_boolq
from tasks.data.features import label_array
from tasks.data.files import DataError
from tasks.data.glue import GLUE_TASKS, TASK_ALIASES, glue_features, glue_task, read_glue_file, write_glue_predictions
from tasks.data.masking import IGNORE_INDEX, Masking, mask_rows, train_rng
from tasks.data.race import ANSWER_LETTERS, LEVELS, option_text, race_features, race_labels, read_race
from tasks.data.split_pair import EmptyPassage, named_inputs, pair_parts, squad_split_features
from tasks.data.squad import (PREDICTIONS_FILE, SquadFeatures, postprocess_squad, read_squad, squad_features,
                              squad_v1_scores, squad_v2_scores, write_squad_outputs)
from tasks.data.text import read_lines, text_features
from tasks.metrics import accuracy, glue_metrics, masked_lm_losses, masked_lm_metrics, predictions_from_logits

from .loop import model_arrays, num_rows, predict_all, take

TASK_NAMES = (*GLUE_TASKS, *TASK_ALIASES, "boolq", "race", "squad", "squad_v2", "mlm")


class TaskError(BadInput, ValueError):
    """A usage error in the task's options or files (the CLI prints it on one line and exits 2)."""


@dataclass
class Split:
    """One split's features: `inputs` (model inputs and, when labelled, targets) and what decoding needs."""

    inputs: dict
    examples: list
    windows: object = None  # SquadFeatures


@dataclass
class Options:
    """The data options of a run (transformers' run_glue / run_qa names)."""

    max_seq_length: int = 128
    doc_stride: int = 128
    max_query_length: int = 64  # question tokens kept (special tokens not counted)
    max_answer_length: int = 30
    n_best: int = 20
    version_2_with_negative: bool = False
    null_score_diff_threshold: float = 0.0
    # the model reads each pair as a question part and a passage part (tasks/data/split_pair.py); then
    # max_seq_length is the passage part's length (its special tokens included)
    split_pair: bool = False
    # masked language modelling (run_mlm.py's names)
    mlm_probability: float = 0.15
    line_by_line: bool = False
    whole_word_masking: bool = False


# the options that change the rows a training step sees (evaluation-only ones, n_best and the like, do not): a
# checkpoint records them and --resume refuses other values (Job.objective_settings)
TRAINING_DATA_OPTIONS = ("max_seq_length", "doc_stride", "max_query_length", "version_2_with_negative", "split_pair",
                         "mlm_probability", "line_by_line", "whole_word_masking")


class Task:
    """A task over files in `data_dir`; `files` maps a split to an explicit path (--train-file ...)."""

    name: str
    head: str = "seqcls"  # the family head the task fine-tunes
    loss: str = "classification"  # key of tasks.train.losses.LOSSES
    main_metric: str = "acc"
    greater_is_better: bool = True  # of main_metric, when the best model is kept
    num_labels: int | None = 2
    split_files: dict = {}  # split -> candidate names inside data_dir, first found wins
    split_is_folder: bool = False  # a split is one file (RACE: a folder of article files)
    # a model trained on the task is fine-tuned for it: its config.json records the task as transformers' run_glue
    # does (`finetuning_task`), which a distillation checks its teacher against (pre-training objectives: False)
    fine_tunes: bool = True

    def __init__(self, data_dir=None, files: dict | None = None, options: Options | None = None):
        self.data_dir = None if data_dir is None else Path(data_dir)
        self.files = {split: Path(path) for split, path in (files or {}).items() if path}
        self.options = options or Options()

    def path(self, split: str) -> Path:
        """The file (or folder) of `split`; TaskError naming what was looked for when it is missing.

        Each name in `split_files` is also looked for gzipped (NAME.gz); the readers gunzip any file.
        """
        if split in self.files:
            candidates = [self.files[split]]
        elif self.data_dir is None:
            raise TaskError(f"{self.name}: no --data-dir and no file given for the {split} split")
        elif not self.data_dir.is_dir():
            problem = "is a file" if self.data_dir.exists() else "does not exist"
            raise TaskError(f"--data-dir {self.data_dir} {problem}; give the folder of the {self.name} files")
        else:
            candidates = [self.data_dir / name for name in self.split_files[split]]
            if not self.split_is_folder:
                candidates += [candidate.with_name(candidate.name + ".gz") for candidate in candidates]
        for candidate in candidates:
            if candidate.exists():
                if candidate.is_dir() != self.split_is_folder:
                    kind = "a folder" if self.split_is_folder else "a file"
                    raise TaskError(f"{self.name}: the {split} data {candidate} is not {kind}")
                return candidate
        raise TaskError(f"{self.name}: no {split} data: {' or '.join(map(str, candidates))} not found")

    def load(self, split: str, tokenizer, limit: int | None = None, inputs=None) -> Split:
        """Features of the first `limit` examples (all when None) of `split`: the model's `inputs`
        (InputSpecs, backends/spec.py; default the joint input_ids, token_type_ids, attention_mask)."""
        raise NotImplementedError

    def features(self, split: Split, tokenizer, inputs) -> dict:
        """Other models' inputs for the same examples, in the same order (a distillation teacher's)."""
        raise TaskError(f"{self.name}: features are built once per split; no second set of model inputs")

    def split_parts(self, where, tokenizer, questions, passages, names) -> dict:
        """A split-pair model's question and passage parts (tasks/data/split_pair.py); an empty passage is a
        TaskError naming `where` (the split's file) and the example."""
        o = self.options
        try:
            return pair_parts(tokenizer, questions, passages, names, o.max_query_length, o.max_seq_length)
        except EmptyPassage as exc:
            raise TaskError(f"{where or self.name}: {exc}") from None

    def has_labels(self, split: Split) -> bool:
        """Whether the split can be scored (test files have no labels)."""
        return "labels" in split.inputs

    def predict(self, runner, split: Split, batch_size: int, progress: bool = False, group=None) -> dict:
        """The runner's outputs on the split that decode() reads: its final outputs of every row (with a
        data-parallel `group`: each process predicts its run of rows, every process gets them all)."""
        return predict_all(runner, split.inputs, batch_size, progress=progress, group=group)

    def dynamic_inputs(self, seed: int):
        """None, or draw(batch, step, micro) -> batch: the inputs the driver draws anew for each micro-batch
        (masked-LM masks), from the seed, the update and the micro-batch."""
        return None

    def decode(self, split: Split, outputs: dict):
        """Predictions from the concatenated final outputs: label ids by default."""
        return predictions_from_logits(outputs["logits"])

    def score(self, split: Split, predictions) -> dict:
        return {"acc": accuracy(predictions, split.inputs["labels"])}

    def write(self, split: Split, predictions, output_dir) -> Path:
        raise NotImplementedError


class GlueTask(Task):
    """The nine GLUE tasks: TSV files in data_dir (or data_dir/<task folder>), the submission TSV."""

    def __init__(self, name: str, data_dir=None, files=None, options=None):
        super().__init__(data_dir, files, options)
        self.glue = glue_task(name)
        self.name = self.glue.name
        self.loss = "regression" if self.glue.is_regression else "classification"
        self.main_metric = self.glue.main_metric
        self.num_labels = self.glue.num_labels
        if self.data_dir is not None and (self.data_dir / self.glue.directory).is_dir():
            self.data_dir = self.data_dir / self.glue.directory  # the GLUE download's root was given
        self.split_files = {split: [name] for split, name in self.glue.files.items()}

    def load(self, split, tokenizer, limit=None, inputs=None):
        examples = read_glue_file(self.path(split), self.glue)[:limit]
        return Split(glue_features(examples, self.glue, tokenizer, self.options.max_seq_length, inputs), examples)

    def features(self, split, tokenizer, inputs):
        return glue_features(split.examples, self.glue, tokenizer, self.options.max_seq_length, inputs)

    def decode(self, split, outputs):
        return predictions_from_logits(outputs["logits"], regression=self.glue.is_regression)

    def score(self, split, predictions):
        return glue_metrics(self.glue, predictions, split.inputs["labels"])

    def write(self, split, predictions, output_dir):
        path = Path(output_dir) / self.glue.submission_file
        write_glue_predictions(path, self.glue, predictions)
        return path


class BoolQTask(Task):
    """BoolQ JSONL (train.jsonl, dev.jsonl or SuperGLUE's val.jsonl, test.jsonl); SuperGLUE's BoolQ.jsonl."""

    name = "boolq"
    split_files = {"train": ["train.jsonl"], "dev": ["dev.jsonl", "val.jsonl"], "test": ["test.jsonl"]}

    def load(self, split, tokenizer, limit=None, inputs=None):
        examples = read_boolq(self.path(split))[:limit]
        return Split(self.features(Split({}, examples), tokenizer, inputs, self.path(split)), examples)

    def features(self, split, tokenizer, inputs, where=None):
        examples = split.examples
        if not self.options.split_pair:
            return boolq_features(examples, tokenizer, self.options.max_seq_length, inputs)
        parts = self.split_parts(where, tokenizer, [e.text_a for e in examples], [e.text_b for e in examples],
                                 [e.guid for e in examples])
        labels = label_array([e.label for e in examples], BOOLQ_LABELS)
        return {**named_inputs(parts, inputs), **({} if labels is None else {"labels": labels})}

    def write(self, split, predictions, output_dir):
        path = Path(output_dir) / "BoolQ.jsonl"
        lines = [json.dumps({"idx": i, "label": BOOLQ_LABELS[p].lower()}) for i, p in enumerate(predictions)]
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        return path


class RaceTask(Task):
    """RACE: data_dir/<split>/{middle,high}/*.txt; four-way multiple choice; predictions.json id -> letter."""

    name = "race"
    head = "mc"
    num_labels = None
    split_files = {"train": ["train"], "dev": ["dev"], "test": ["test"]}
    split_is_folder = True

    def load(self, split, tokenizer, limit=None, inputs=None):
        folder = self.path(split)
        examples = read_race(folder.parent, folder.name, LEVELS)[:limit]
        return Split(self.features(Split({}, examples), tokenizer, inputs, folder), examples)

    def features(self, split, tokenizer, inputs, where=None):
        examples = split.examples
        if not self.options.split_pair:
            return race_features(examples, tokenizer, self.options.max_seq_length, inputs)
        choices = len(ANSWER_LETTERS)  # question part: the question with each option; passage part: the article
        parts = self.split_parts(where, tokenizer,
                                 [option_text(e.question, option) for e in examples for option in e.options],
                                 [e.article for e in examples for _ in range(choices)],
                                 [e.guid for e in examples for _ in range(choices)])
        labels = race_labels(examples)
        return {**named_inputs(parts, inputs, (len(examples), choices)),
                **({} if labels is None else {"labels": labels})}

    def write(self, split, predictions, output_dir):
        path = Path(output_dir) / "predictions.json"
        answers = {example.guid: ANSWER_LETTERS[p] for example, p in zip(split.examples, predictions)}
        path.write_text(json.dumps(answers, indent=2) + "\n", encoding="utf-8")
        return path


class SquadTask(Task):
    """SQuAD v1.1 / v2.0 JSON; sliding windows; n-best span decoding; predictions.json and null_odds.json."""

    head = "qa"
    loss = "span"
    main_metric = "f1"
    num_labels = None

    def __init__(self, name: str, data_dir=None, files=None, options=None):
        super().__init__(data_dir, files, options)
        if name == "squad_v2":
            self.options.version_2_with_negative = True
        self.name = "squad_v2" if self.options.version_2_with_negative else "squad"
        version = "v2.0" if self.options.version_2_with_negative else "v1.1"
        # the shared data's rebuilt train file (../shared/data/SOURCES.md) is found too
        self.split_files = {"train": [f"train-{version}.json", f"train-{version}.reconstructed.json"],
                            "dev": [f"dev-{version}.json"],
                            "test": [f"test-{version}.json"]}

    def load(self, split, tokenizer, limit=None, inputs=None):
        """Windows of the first `limit` questions; for training also at most `limit` windows, as transformers'
        run_qa.py counts --max-train-samples (an evaluation keeps every window of its questions)."""
        o = self.options
        examples = read_squad(self.path(split))[:limit]
        if o.split_pair:  # windows over the passage alone; offsets over the joint [question part; passage part]
            try:
                found = squad_split_features(examples, tokenizer, o.max_seq_length, o.doc_stride, o.max_query_length)
            except EmptyPassage as exc:
                raise TaskError(f"{self.path(split)}: {exc}") from None
            positions = {"start_positions": found.start_positions, "end_positions": found.end_positions}
            inputs = {**named_inputs(found.parts, inputs), **positions}
            windows = SquadFeatures(inputs, found.example_index, found.offsets, np.zeros_like(found.example_index))
        else:
            apart = [spec.name for spec in inputs or () if spec.text != "joint"]
            if apart:
                raise TaskError(f"{self.name}: the model reads each text on its own ({', '.join(apart)}); SQuAD's "
                                "windows are built for question and passage tokenised together")
            windows = squad_features(examples, tokenizer, o.max_seq_length, o.doc_stride, o.max_query_length)
            arrays = windows.inputs
            if inputs is not None:  # the model's inputs under its names, and the span targets
                arrays = {**{spec.name: arrays[spec.feature] for spec in inputs},
                          **{name: arrays[name] for name in ("start_positions", "end_positions")}}
            inputs = arrays
        if split == "train" and limit is not None:
            inputs = {name: array[:limit] for name, array in inputs.items()}
        return Split(inputs, examples, windows)

    def decode(self, split, outputs):
        """(answers, null_odds) by question id."""
        o = self.options
        return postprocess_squad(split.examples, split.windows, outputs["start_logits"], outputs["end_logits"],
                                 o.n_best, o.max_answer_length, o.version_2_with_negative,
                                 o.null_score_diff_threshold)

    def score(self, split, predictions):
        answers, null_odds = predictions
        if self.options.version_2_with_negative:
            return squad_v2_scores(split.examples, answers, null_odds)
        return squad_v1_scores(split.examples, answers)

    def has_labels(self, split):
        return any(example.answers for example in split.examples)

    def write(self, split, predictions, output_dir):
        write_squad_outputs(output_dir, *predictions)
        return Path(output_dir) / PREDICTIONS_FILE


class MlmTask(Task):
    """Masked language modelling on plain text (transformers' run_mlm.py): --train-file/--validation-file, or
    train.txt and validation.txt (dev.txt) in --data-dir. Training masks each micro-batch anew (dynamic
    masking, drawn from seed, update and micro-batch); the validation text is masked once, row by row from the
    row's index, so its loss and perplexity = exp(mean loss over the masked tokens) compare across runs and
    backends. Writes the per-row losses (masked_lm_losses.tsv)."""

    name = "mlm"
    head = "mlm"
    fine_tunes = False  # masked-LM (pre-)training
    loss = "masked_lm"
    main_metric = "perplexity"
    greater_is_better = False
    num_labels = None
    split_files = {"train": ["train.txt"], "dev": ["validation.txt", "dev.txt"], "test": []}
    # set by load(): how tokens are masked, and the name of the model input holding the token ids
    masking: Masking | None = None
    ids_name: str = "input_ids"

    def path(self, split):
        if split == "test":
            raise TaskError("mlm: nothing to predict; score a text with --do-eval and --validation-file")
        return super().path(split)

    def load(self, split, tokenizer, limit=None, inputs=None):
        o = self.options
        if tokenizer.mask_token_id is None:
            raise TaskError(f"mlm: the tokenizer has no mask token ({type(tokenizer).__name__})")
        try:
            self.masking = Masking(tokenizer.mask_token_id, len(tokenizer), o.mlm_probability, o.whole_word_masking)
        except ValueError as exc:
            raise TaskError(f"--mlm-probability: {exc}") from None
        self.ids_name = next((spec.name for spec in inputs or () if spec.feature == "input_ids"), "input_ids")
        path = self.path(split)
        lines = read_lines(path)
        if o.line_by_line:
            lines = lines[:limit]  # one example per line: the first `limit` lines
        features = text_features(lines, tokenizer, o.max_seq_length, o.line_by_line, o.whole_word_masking, path,
                                 inputs)
        features = {name: array[:limit] for name, array in features.items()}  # grouped: the first `limit` blocks
        if split == "dev":  # one fixed masking of the validation text
            maskable, starts = features.pop("maskable"), features.pop("word_starts", None)
            features[self.ids_name], features["labels"] = mask_rows(self.masking, features[self.ids_name], maskable,
                                                                    starts)
            if not (features["labels"] != IGNORE_INDEX).any():
                raise DataError(path, None, "too little text: the validation masking selected no token (give "
                                            "more text or a higher --mlm-probability)")
        return Split(features, list(range(num_rows(features))))

    def has_labels(self, split):
        return "labels" in split.inputs or "maskable" in split.inputs  # training draws its labels per step

    def dynamic_inputs(self, seed):
        def draw(batch, step, micro):
            batch = dict(batch)
            maskable, starts = batch.pop("maskable"), batch.pop("word_starts", None)
            batch[self.ids_name], batch["labels"] = self.masking.apply(batch[self.ids_name], maskable,
                                                                       train_rng(seed, step, micro), starts)
            return batch
        return draw

    def predict(self, runner, split, batch_size, progress=False, group=None):
        """Per row: the summed loss over its masked tokens and their count (the logits of one batch at a time:
        those of a whole split would not fit); data-parallel, each process scores its run of rows and the
        `group` gathers them."""
        inputs, labels = model_arrays(runner, split.inputs), split.inputs["labels"]
        total = len(labels)
        mine = np.arange(total) if group is None else group.layout.rows(total)
        sums, counts = [np.zeros(0)], [np.zeros(0, dtype=np.int64)]
        for start in tqdm(range(0, len(mine), batch_size), desc="evaluate", leave=False, disable=not progress):
            rows = mine[start:start + batch_size]
            loss_sums, count = masked_lm_losses(runner.predict(take(inputs, rows))["logits"], labels[rows],
                                                IGNORE_INDEX)
            sums.append(loss_sums)
            counts.append(count)
        scored = {"loss_sums": np.concatenate(sums), "masked_tokens": np.concatenate(counts)}
        if group is None or group.layout.size == 1:
            return scored
        return gather_rows(group, scored, total, mine)

    def decode(self, split, outputs):
        return outputs

    def score(self, split, predictions):
        return masked_lm_metrics(predictions["loss_sums"], predictions["masked_tokens"])

    def write(self, split, predictions, output_dir):
        path = Path(output_dir) / "masked_lm_losses.tsv"
        rows = zip(predictions["masked_tokens"].tolist(), predictions["loss_sums"].tolist())
        lines = ["row\tmasked_tokens\tloss_sum", *(f"{i}\t{count}\t{loss!r}" for i, (count, loss) in enumerate(rows))]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path


MLM_DEFAULTS = {key: getattr(Options(), key) for key in ("mlm_probability", "line_by_line", "whole_word_masking")}


def make_task(name: str, data_dir=None, files=None, options=None) -> Task:
    """The task called `name` (GLUE names and aliases, boolq, race, squad, squad_v2, mlm)."""
    key = name.lower()
    changed = [option for option, default in MLM_DEFAULTS.items() if getattr(options, option, default) != default]
    if key == "mlm":
        return MlmTask(data_dir, files, options)
    if changed:
        raise TaskError(f"--{changed[0].replace('_', '-')} applies to --task mlm only")
    if key in ("squad", "squad_v2"):
        return SquadTask(key, data_dir, files, options)
    if key == "boolq":
        return BoolQTask(data_dir, files, options)
    if key == "race":
        return RaceTask(data_dir, files, options)
    if key in GLUE_TASKS or key in TASK_ALIASES:
        return GlueTask(key, data_dir, files, options)
    raise TaskError(f"unknown task {name!r}; known: {', '.join(TASK_NAMES)}")

