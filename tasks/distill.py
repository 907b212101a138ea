"""Knowledge distillation, written once over a backend's op set (backends/_fw/<framework>/train.py).

- Prediction layer (Hinton et al. 2015): alpha * T^2 * CE(softmax(teacher / T), softmax(student / T))
  + (1 - alpha) * the task's hard-label loss. Regression tasks (STS-B) regress the teacher's score. A span
  head distills its start and end logits (the mean of the two soft losses; the DeFormer's "teachsl").
- Hidden states (--hidden-mse-weight W, the DeFormer's "teachhs"): + W * the mean squared error of the
  student's last hidden states against the teacher's over the real tokens of the joint sequence.
- A DeFormer student reads question and passage parts; a base-family teacher reads them joined, padding at
  the end (tasks/data/split_pair.py), and its per-token outputs are moved back to the student's positions.
- Logit regression (Tang et al. 2019, the BiLSTM student, --soft-loss mse): alpha * mean over examples
  of ||teacher logits - student logits||^2 + (1 - alpha) * the hard-label loss.
- Intermediate layers (TinyBERT, Jiao et al. 2020; --intermediate): MSE of fit_dense(student hidden
  state m) and teacher hidden state m * k (m = 0 is the embedding output), plus MSE of student attention
  scores of layer m and teacher layer (m + 1) * k - 1, masked scores zeroed, k = teacher / student layers;
  as TinyBERT's task_distill.py. The same losses with no task at all, on a text corpus, are TinyBERT's general
  distillation (--general, tasks/general_distill.py).

A train file written by `tasks augment` (tasks/augment.py) has the teacher's logits of its rows beside it; they are
read instead of running the teacher (checked against the file's bytes and the teacher's parameters).
Otherwise teacher outputs are computed once over the train split before training, in the teacher's backend: in
this process when it is the student's, else in a child process (`python -m tasks.distill JOB.json`),
so each process imports one framework; they wait on disk, memory-mapped, and each batch reads its rows.
TinyBERT's intermediate losses need the teacher's hidden states every step: the teacher then runs beside
the student, in the same framework.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from backends import family, framework
from backends.tensorfile import SafetensorsReader, save_arrays

from tasks.train import runner_class
from tasks.train.job import Job, few, log
from tasks.data.augment import logits_path, params_digest, read_stored_logits
from tasks.data.split_pair import TEXTS, join_parts, student_layout, token_feature
from tasks.train.loop import model_arrays, num_rows, take
from tasks.train.losses import LOSSES
from tasks.train.model import check_teacher_task, load_model
from tasks.train.task import GlueTask, TaskError

MASKED_SCORE = -1e2  # TinyBERT zeroes attention scores at or below this (masked keys carry -10000)
TEACHER = "teacher_"  # batch key prefix of the teacher's outputs: teacher_logits, teacher_start_logits, ...
TEACHER_LOGITS = TEACHER + "logits"
# teachers whose outputs hold every layer's "hidden_states" (embeddings first) and pre-softmax "attention_scores"
INTERMEDIATE_TEACHERS = ("bert", "roberta", "tinybert")
HIDDEN = "last_hidden_state"  # the output the hidden-state MSE compares (DeFormer's "teachhs")
HIDDEN_WEIGHTS = "hidden_mse_weights"  # per token of the batch: its share of the hidden-state MSE
TEACHER_ROW = "teacher_row"  # the train row of each batch row: where the teacher's outputs are read
PADDING_LOGIT = -1e4  # the teacher's logit at a student position it does not have (padding between the parts)


def soft_cross_entropy(ops, student_logits, teacher_logits, temperature: float):
    """T^2 * mean over examples of CE(softmax(teacher / T), log_softmax(student / T))."""
    targets = ops.softmax(teacher_logits / temperature)
    return ops.mean(-ops.sum_last(targets * ops.log_softmax(student_logits / temperature))) * temperature ** 2


def logit_mse(ops, student_logits, teacher_logits):
    """Mean over examples of the squared distance of the logit vectors (Tang et al.)."""
    return ops.mean(ops.sum_last((student_logits - teacher_logits) ** 2))


def hidden_mse(ops, student_states, teacher_states, weights):
    """Mean squared difference of the hidden states over the real tokens: `weights` [rows, seq] is 0 at padding
    and rows * seq / (real tokens * hidden size) at real tokens (hidden_mse_weights)."""
    return ops.mean(ops.sum_last((student_states - teacher_states) ** 2) * weights)


def hidden_mse_weights(mask: np.ndarray, hidden_size: int) -> np.ndarray:
    """hidden_mse's weights for a batch's joint attention mask [rows, seq]."""
    mask = mask.astype(np.float64)
    return mask * (mask.size / (mask.sum() * hidden_size))


def prediction_loss(temperature: float, alpha: float, soft: str, regression: bool, outputs=("logits",),
                    hard: str | None = None, hidden_weight: float = 0.0):
    """loss(ops, outputs, batch) mixing the teacher's outputs (batch["teacher_<output>"]) with the labels:
    alpha * the mean over `outputs` (logits; start_logits and end_logits of a span head) of the soft loss
    + (1 - alpha) * the hard loss (`hard`, a key of LOSSES; default classification or regression)
    + hidden_weight * hidden_mse of the last hidden states."""
    hard_loss = LOSSES[hard or ("regression" if regression else "classification")]

    def loss(ops, model_outputs, batch):
        distill = 0.0
        for name in outputs:
            student, teacher = model_outputs[name], batch[TEACHER + name]
            if regression or soft == "mse":
                distill = distill + logit_mse(ops, student, teacher)
            else:
                distill = distill + soft_cross_entropy(ops, student, teacher, temperature)
        total = alpha * distill / len(outputs) + (1 - alpha) * hard_loss(ops, model_outputs, batch)
        if hidden_weight:
            total = total + hidden_weight * hidden_mse(ops, model_outputs[HIDDEN], batch[TEACHER + HIDDEN],
                                                       batch[HIDDEN_WEIGHTS])
        return total

    return loss


def intermediate_loss(ops, outputs, batch):
    """TinyBERT's hidden-state (embeddings included) and attention-score losses against batch["teacher"]."""
    teacher = batch["teacher"]
    student_scores, fitted = outputs["attention_scores"], outputs["fit_hidden_states"]
    k = len(teacher["attention_scores"]) // len(student_scores)
    attention = sum(ops.mse(ops.zero_where_below(scores, MASKED_SCORE),
                            ops.zero_where_below(teacher["attention_scores"][(m + 1) * k - 1], MASKED_SCORE))
                    for m, scores in enumerate(student_scores))
    hidden = sum(ops.mse(fitted[m], teacher["hidden_states"][m * k]) for m in range(len(student_scores) + 1))
    return attention + hidden


def check_tinybert_student(option: str, student: str, family_name: str) -> None:
    if family_name != "tinybert":
        raise TaskError(f"{option} needs a TinyBERT student (its fit_dense maps to the teacher's width); --student "
                        f"{student} is a {family_name} model")


class DistillJob(Job):
    """`python -m tasks distill`: finetune's Job with a teacher and a distillation loss."""

    model_option = "student"
    intermediate_option = "--intermediate"  # the option that asked for TinyBERT's intermediate losses

    def __init__(self, args):
        if args.task is None and not args.general:
            raise TaskError("distill: give --task (or --general: TinyBERT's general distillation on a text corpus)")
        if not args.do_train:
            raise TaskError("distill trains the student: give --do-train")
        if not 0.0 <= args.alpha <= 1.0 or args.temperature <= 0:
            raise TaskError("--alpha must lie in [0, 1] and --temperature be positive")
        if args.hidden_mse_weight < 0:
            raise TaskError(f"--hidden-mse-weight must be 0 or more, not {args.hidden_mse_weight}")
        super().__init__(args)
        self._teacher_beside = None  # teacher_beside(): built on first use
        self.teacher_backend = args.teacher_backend or args.backend
        self.teacher = load_model(args.teacher, self.task.head, self.task.num_labels, seed=args.seed)
        missing = self.teacher_missing()
        if self.teacher.folder is None or missing:
            raise TaskError(f"--teacher {args.teacher}: a fine-tuned model folder is needed "
                            f"({len(missing)} parameters missing: {few(missing)})")
        check_teacher_task(self.teacher, self.task)
        if args.intermediate:
            self.check_intermediate(self.intermediate_option)
        else:
            if args.hidden_mse_weight:
                widths = (getattr(self.teacher.config, "hidden_size", None),
                          getattr(self.source.config, "hidden_size", None))
                if widths[0] is None or widths[0] != widths[1]:
                    raise TaskError(f"--hidden-mse-weight compares the last hidden states: the teacher's width "
                                    f"({widths[0]}) must be the student's ({widths[1]})")
            self.stored = self.stored_logits()
            self.teacher_features, self.teacher_positions = self.teacher_inputs() if self.stored is None else (None,
                                                                                                              None)

    def check_intermediate(self, option: str) -> None:
        """TinyBERT's intermediate losses (`option`: --intermediate, or --general) feed the student's token ids to
        the teacher beside it and compare fit_dense(student states) with the teacher's states: the student must be
        TinyBERT, and the teacher a BERT-like encoder of the same vocabulary, fit_size wide, with a multiple of the
        student's layers."""
        args, teacher, student = self.args, self.teacher.config, self.source.config
        if args.hidden_mse_weight:
            raise TaskError(f"--hidden-mse-weight is a prediction-layer loss; {option} has its own hidden-state "
                            "losses")
        check_tinybert_student(option, args.student, self.source.family)
        if self.teacher.family not in INTERMEDIATE_TEACHERS:
            raise TaskError(f"{option}: --teacher {args.teacher} is a {self.teacher.family} model; TinyBERT's "
                            f"layer mapping needs one of {', '.join(INTERMEDIATE_TEACHERS)}")
        if self.teacher_backend != args.backend:
            raise TaskError(f"{option} runs the teacher beside the student: --teacher-backend must be --backend")
        config_file = self.teacher.folder / "config.json"
        if teacher.vocab_size != student.vocab_size:
            raise TaskError(f"{config_file}: the teacher's vocab_size {teacher.vocab_size} differs from the "
                            f"student's {student.vocab_size} (--student {args.student}); {option} feeds both the "
                            "same token ids")
        if teacher.hidden_size != student.fit_size:
            raise TaskError(f"{config_file}: the teacher's hidden_size {teacher.hidden_size} differs from the "
                            f"student's fit_size {student.fit_size} (--student {args.student}); give "
                            f"--config-overrides fit_size={teacher.hidden_size} to a fresh student")
        if teacher.max_position_embeddings < self.task.options.max_seq_length:
            raise TaskError(f"--max-seq-length {self.task.options.max_seq_length} exceeds the teacher's "
                            f"max_position_embeddings {teacher.max_position_embeddings} ({config_file})")
        layers = (teacher.num_hidden_layers, student.num_hidden_layers)
        if layers[0] % layers[1]:
            fitting = [str(n) for n in range(1, layers[0] + 1) if layers[0] % n == 0]
            raise TaskError(f"{option}: teacher layers ({layers[0]}, {config_file}) must be a multiple of student "
                            f"layers ({layers[1]}); a student of {', '.join(fitting)} layers fits (a fresh one: "
                            "--config-overrides num_hidden_layers=N)")

    def objective_settings(self) -> dict:
        """finetune's, and the distillation loss's: a resumed student keeps the loss it was trained with (the
        prediction-layer options are not used by --intermediate and --general, which have their own losses)."""
        a = self.args
        loss = {"intermediate": a.intermediate, "general": a.general}
        if not (a.intermediate or a.general):
            loss.update(alpha=a.alpha, temperature=a.temperature, soft_loss=a.soft_loss,
                        hidden_mse_weight=a.hidden_mse_weight)
        return {**super().objective_settings(), **loss}

    def teacher_missing(self) -> list:
        """The teacher's parameters that its folder lacks and the distillation needs (a task stage: all)."""
        return self.teacher.fresh

    def tokenizer_folder(self):
        return self.args.tokenizer or self.args.teacher

    def stored_logits(self) -> np.ndarray | None:
        """The teacher's logits of the train rows that `tasks augment` stored beside a GLUE train file (checked
        against the file's rows and the teacher), in the run's dtype; None when there are none, or when the run
        needs more of the teacher than its logits (--hidden-mse-weight)."""
        if not isinstance(self.task, GlueTask) or self.args.hidden_mse_weight:
            return None
        train_file = self.task.path("train")
        if not logits_path(train_file).is_file():
            return None
        logits, meta = read_stored_logits(train_file, len(self.splits["train"].examples), self.task.num_labels,
                                          params_digest(self.teacher.params))
        log(f"note: the teacher's logits are read from {logits_path(train_file)} (written in "
            f"{json.loads(meta.get('backend', 'null'))}, {json.loads(meta.get('dtype', 'null'))}); the teacher is "
            "not run")
        return logits.astype(self.args.dtype)

    def objective(self, runner):
        inputs = self.splits["train"].inputs
        if self.args.intermediate:
            teacher = self.teacher_beside()
            return intermediate_loss, lambda batch: {**batch, "teacher": teacher.outputs(batch)}, inputs
        a = self.args
        names = family(self.source.family).prediction_outputs(self.task.head)
        wanted = names + ((HIDDEN,) if a.hidden_mse_weight else ())
        teacher = self.teacher_outputs(self.teacher_features, wanted) if self.stored is None else {
            "logits": self.stored}
        loss = prediction_loss(a.temperature, a.alpha, a.soft_loss, regression=self.task.loss == "regression",
                               outputs=names, hard=self.task.loss, hidden_weight=a.hidden_mse_weight)
        rows = {TEACHER_ROW: np.arange(num_rows(inputs))}
        return loss, lambda batch: self.with_teacher(batch, teacher), {**inputs, **rows}

    def teacher_inputs(self) -> tuple[dict, np.ndarray | None]:
        """The teacher's inputs for the train examples, in the student's order, and where each position of the
        student's joint sequence lies in the teacher's (None: the same). The student's features when both
        declare the same inputs; a split-pair student's parts joined for a joint teacher (the base model of a
        DeFormer: the question's and the passage's tokens, padding at the end); else the teacher's own features
        (a joint pair for a two-tower student's teacher)."""
        split = self.splits["train"]
        wanted = family(self.teacher.family).model_inputs(self.teacher.config, self.task.head)
        if wanted == self.inputs:
            return split.inputs, None
        if self.task.options.split_pair:
            apart = [spec.name for spec in wanted if spec.text != "joint"]
            if apart:
                raise TaskError(f"--teacher {self.args.teacher}: a DeFormer student's teacher reads the joint pair or "
                                f"the student's own inputs; this one reads {', '.join(apart)}")
            joint, positions = join_parts(*(parts_of(split.inputs, self.inputs, text) for text in TEXTS))
            return {spec.name: joint[spec.feature].astype(spec.dtype, copy=False) for spec in wanted}, positions
        try:
            return self.task.features(split, self.tokenizer, wanted), None
        except (ValueError, KeyError) as exc:  # as Job's: the readers' messages, unquoted
            message = str(exc).strip("'\"")
            raise TaskError(f"--teacher {self.args.teacher}: {message}") from None

    def teacher_runner(self, bf16=None):
        a = self.args
        return runner_class(self.teacher_backend)(self.teacher.family, self.teacher.config, self.teacher.head,
                                                  self.teacher.params, dtype=a.dtype, device=a.device,
                                                  bf16=a.bf16 if bf16 is None else bf16)

    def teacher_beside(self):
        """The teacher's runner in the student's framework, built once (TinyBERT's intermediate losses run it every
        step, and on the validation text)."""
        if self._teacher_beside is None:
            self._teacher_beside = self.teacher_runner()
        return self._teacher_beside

    def teacher_outputs(self, inputs, names) -> dict:
        """The teacher's outputs `names` for every train row, as numpy arrays (on disk, memory-mapped) in the
        teacher's layout, computed once in the teacher's backend: here, or in a child process when that is
        another framework than the student's."""
        self._teacher_folder = tempfile.TemporaryDirectory(prefix="teacher-outputs-")
        folder = Path(self._teacher_folder.name)
        wanted = family(self.teacher.family).input_names(self.teacher.config, self.teacher.head)
        if self.teacher_backend == self.args.backend:
            write_outputs(self.teacher_runner(bf16=False), self.teacher_backend, inputs, self.eval_batch_size,
                          names, folder)
        else:
            job = {"teacher": self.args.teacher, "head": self.task.head, "num_labels": self.task.num_labels,
                   "backend": self.teacher_backend, "dtype": self.args.dtype, "device": self.args.device,
                   "batch_size": self.eval_batch_size, "inputs": str(folder / "inputs.safetensors"),
                   "outputs": list(names), "folder": str(folder)}
            save_arrays(job["inputs"], {name: inputs[name] for name in wanted})
            (folder / "job.json").write_text(json.dumps(job))
            subprocess.run([sys.executable, "-m", "tasks.distill", str(folder / "job.json")], check=True,
                           env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
                               str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")]))})
        return {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in names}

    def with_teacher(self, batch: dict, teacher: dict) -> dict:
        """The batch with the teacher's outputs of its rows in the student's layout (teacher_<output>), and the
        hidden-state MSE's token weights."""
        batch = dict(batch)
        rows = batch.pop(TEACHER_ROW)
        positions = None if self.teacher_positions is None else self.teacher_positions[rows]
        for name, array in teacher.items():
            array = np.asarray(array[rows])
            if positions is not None and name != "logits":  # per-token outputs: to the student's positions
                array = student_layout(array, positions, 0.0 if name == HIDDEN else PADDING_LOGIT)
            if name == HIDDEN:
                array = array.reshape(-1, *array.shape[-2:])  # choices flattened into rows, as the model's
            batch[TEACHER + name] = array
        if HIDDEN in teacher:
            masks = [batch[spec.name] for spec in self.inputs if token_feature(spec) == "attention_mask"]  # in order
            mask = np.concatenate(masks, axis=-1)
            batch[HIDDEN_WEIGHTS] = hidden_mse_weights(mask.reshape(-1, mask.shape[-1]),
                                                       self.source.config.hidden_size)
        return batch


def parts_of(arrays: dict, inputs, text: str) -> dict:
    """The token features (input_ids, ...) of the part `text` ("a", "b") from a split-pair model's inputs."""
    return {token_feature(spec): arrays[spec.name] for spec in inputs if spec.text == text}


def write_outputs(runner, backend: str, inputs: dict, batch_size: int, names, folder: Path) -> None:
    """The runner's eval-mode outputs `names` for every row of `inputs`, into folder/<name>.npy: rows in the
    inputs' order (a multiple-choice model's [rows * choices, ...] outputs as [rows, choices, ...])."""
    to_numpy = framework(backend).to_numpy
    inputs = model_arrays(runner, inputs)
    count, files = num_rows(inputs), {}
    for start in range(0, count, batch_size):
        outputs = runner.outputs(take(inputs, slice(start, start + batch_size)))
        rows = min(batch_size, count - start)
        for name in names:
            array = to_numpy(outputs[name])
            if array.shape[0] != rows:
                array = array.reshape(rows, -1, *array.shape[1:])
            if name not in files:
                files[name] = np.lib.format.open_memmap(folder / f"{name}.npy", "w+", array.dtype,
                                                        (count, *array.shape[1:]))
            files[name][start:start + rows] = array
    for array in files.values():
        array.flush()


def teacher_outputs_job(job_path: str) -> None:
    """Child process: the teacher's outputs over the saved inputs, in one backend (DistillJob.teacher_outputs)."""
    job = json.loads(Path(job_path).read_text())
    teacher = load_model(job["teacher"], job["head"], job["num_labels"])
    runner = runner_class(job["backend"])(teacher.family, teacher.config, teacher.head, teacher.params,
                                          dtype=job["dtype"], device=job["device"])
    write_outputs(runner, job["backend"], dict(SafetensorsReader(job["inputs"])), job["batch_size"], job["outputs"],
                  Path(job["folder"]))


if __name__ == "__main__":
    teacher_outputs_job(sys.argv[1])
