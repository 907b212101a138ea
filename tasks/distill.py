"""Knowledge distillation, written once over a backend's op set (backends/_fw/<framework>/train.py).

- Prediction layer (Hinton et al. 2015): alpha * T^2 * CE(softmax(teacher / T), softmax(student / T))
  + (1 - alpha) * the task's hard-label loss. Regression tasks (STS-B) regress the teacher's score.
- Logit regression (Tang et al. 2019, the BiLSTM student, --soft-loss mse): alpha * mean over examples
  of ||teacher logits - student logits||^2 + (1 - alpha) * the hard-label loss.
- Intermediate layers (TinyBERT, Jiao et al. 2020; --intermediate): MSE of fit_dense(student hidden
  state m) and teacher hidden state m * k (m = 0 is the embedding output), plus MSE of student attention
  scores of layer m and teacher layer (m + 1) * k - 1, masked scores zeroed, k = teacher / student layers;
  as TinyBERT's task_distill.py.

Teacher logits are computed once over the train split before training, in the teacher's backend: in
this process when it is the student's, else in a child process (`python -m tasks.distill JOB.json`),
so each process imports one framework. TinyBERT's intermediate losses need the teacher's hidden states
every step: the teacher then runs beside the student, in the same framework.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from backends import family
from backends.tensorfile import SafetensorsReader, save_arrays

from tasks.train import runner_class
from tasks.train.job import Job
from tasks.train.loop import predict_all
from tasks.train.losses import LOSSES
from tasks.train.model import load_model
from tasks.train.task import TaskError

MASKED_SCORE = -1e2  # TinyBERT zeroes attention scores at or below this (masked keys carry -10000)
TEACHER_LOGITS = "teacher_logits"


def soft_cross_entropy(ops, student_logits, teacher_logits, temperature: float):
    """T^2 * mean over examples of CE(softmax(teacher / T), log_softmax(student / T))."""
    targets = ops.softmax(teacher_logits / temperature)
    return ops.mean(-ops.sum_last(targets * ops.log_softmax(student_logits / temperature))) * temperature ** 2


def logit_mse(ops, student_logits, teacher_logits):
    """Mean over examples of the squared distance of the logit vectors (Tang et al.)."""
    return ops.mean(ops.sum_last((student_logits - teacher_logits) ** 2))


def prediction_loss(temperature: float, alpha: float, soft: str, regression: bool):
    """loss(ops, outputs, batch) mixing the teacher's logits (batch["teacher_logits"]) with the labels."""
    hard_loss = LOSSES["regression" if regression else "classification"]

    def loss(ops, outputs, batch):
        student, teacher = outputs["logits"], batch[TEACHER_LOGITS]
        if regression or soft == "mse":
            distill = logit_mse(ops, student, teacher)
        else:
            distill = soft_cross_entropy(ops, student, teacher, temperature)
        return alpha * distill + (1 - alpha) * hard_loss(ops, outputs, batch)

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


class DistillJob(Job):
    """`python -m tasks distill`: finetune's Job with a teacher and a distillation loss."""

    model_option = "student"

    def __init__(self, args):
        if not args.do_train:
            raise TaskError("distill trains the student: give --do-train")
        if not 0.0 <= args.alpha <= 1.0 or args.temperature <= 0:
            raise TaskError("--alpha must lie in [0, 1] and --temperature be positive")
        super().__init__(args)
        self.teacher_backend = args.teacher_backend or args.backend
        self.teacher = load_model(args.teacher, self.task.head, self.task.num_labels, seed=args.seed)
        if self.teacher.folder is None or self.teacher.fresh:
            raise TaskError(f"--teacher {args.teacher}: a fine-tuned model folder is needed "
                            f"({len(self.teacher.fresh)} parameters missing)")
        if self.task.head == "qa" and not args.intermediate:
            raise TaskError(f"{self.task.name}: the prediction-layer losses distill logits; span heads have none "
                            "(use --intermediate)")
        if args.intermediate:
            if self.source.family != "tinybert":
                raise TaskError("--intermediate needs a TinyBERT student (its fit_dense maps to the teacher width)")
            if self.teacher_backend != args.backend:
                raise TaskError("--intermediate runs the teacher beside the student: --teacher-backend must be "
                                "--backend")
            layers = (self.teacher.config.num_hidden_layers, self.source.config.num_hidden_layers)
            if layers[0] % layers[1]:
                raise TaskError(f"--intermediate: teacher layers ({layers[0]}) must be a multiple of student layers "
                                f"({layers[1]})")
        else:
            self.teacher_features = self.teacher_inputs()

    def tokenizer_folder(self):
        return self.args.tokenizer or self.args.teacher

    def objective(self, runner):
        inputs = self.splits["train"].inputs
        if self.args.intermediate:
            teacher = self.teacher_runner()
            return intermediate_loss, lambda batch: {**batch, "teacher": teacher.outputs(batch)}, inputs
        a = self.args
        loss = prediction_loss(a.temperature, a.alpha, a.soft_loss, regression=self.task.loss == "regression")
        return loss, None, {**inputs, TEACHER_LOGITS: self.teacher_logits(self.teacher_features)}

    def teacher_inputs(self) -> dict:
        """The teacher's inputs for the train examples, in the student's order: the student's features when
        both declare the same inputs, else the teacher's own (a joint pair for a two-tower student's teacher)."""
        split = self.splits["train"]
        wanted = family(self.teacher.family).model_inputs(self.teacher.config, self.task.head)
        if wanted == self.inputs:
            return split.inputs
        try:
            return self.task.features(split, self.tokenizer, wanted)
        except (ValueError, KeyError) as exc:  # as Job's: the readers' messages, unquoted
            message = str(exc).strip("'\"")
            raise TaskError(f"--teacher {self.args.teacher}: {message}") from None

    def teacher_runner(self):
        a = self.args
        return runner_class(self.teacher_backend)(self.teacher.family, self.teacher.config, self.teacher.head,
                                                  self.teacher.params, dtype=a.dtype, device=a.device, bf16=a.bf16)

    def teacher_logits(self, inputs):
        """The teacher's logits for every train example, as numpy."""
        if self.teacher_backend == self.args.backend:
            return predict_all(self.teacher_runner(), inputs, self.eval_batch_size)["logits"]
        with tempfile.TemporaryDirectory() as work:
            job = {"teacher": self.args.teacher, "head": self.task.head, "num_labels": self.task.num_labels,
                   "backend": self.teacher_backend, "dtype": self.args.dtype, "device": self.args.device,
                   "batch_size": self.eval_batch_size, "inputs": str(Path(work) / "inputs.safetensors"),
                   "output": str(Path(work) / "logits.safetensors")}
            save_arrays(job["inputs"], {k: v for k, v in inputs.items() if k != "labels"})
            (Path(work) / "job.json").write_text(json.dumps(job))
            subprocess.run([sys.executable, "-m", "tasks.distill", str(Path(work) / "job.json")], check=True,
                           env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
                               str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")]))})
            return SafetensorsReader(job["output"])["logits"]


def teacher_logits_job(job_path: str) -> None:
    """Child process: the teacher's logits over the saved inputs, in one backend."""
    job = json.loads(Path(job_path).read_text())
    teacher = load_model(job["teacher"], job["head"], job["num_labels"])
    runner = runner_class(job["backend"])(teacher.family, teacher.config, teacher.head, teacher.params,
                                          dtype=job["dtype"], device=job["device"])
    logits = predict_all(runner, dict(SafetensorsReader(job["inputs"])), job["batch_size"])["logits"]
    save_arrays(job["output"], {"logits": logits})


if __name__ == "__main__":
    teacher_logits_job(sys.argv[1])
