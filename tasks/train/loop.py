"""The framework-free training driver over a step module's Runner (tasks/train/<framework>.py).

Everything that decides the trajectory lives here, the same for every backend: the batch order (a numpy
permutation seeded by (seed, epoch)), gradient accumulation, the learning rate of each update, the dropout
seed of each micro-batch, when to evaluate and save, and which evaluation was best. A checkpoint holds
the weights, the optimizer moments and the step; the batch position, the schedule position and the
dropout seeds all follow from the step, so a resumed run repeats the uninterrupted one exactly.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

from backends.errors import BadInput
from backends.tensorfile import SafetensorsReader, save_arrays

from .optim import AdamW, linear_lr, warmup_steps

WEIGHTS_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "trainer_state.json"
CHECKPOINT_PREFIX = "checkpoint-"
BEST_DIR = "best"
# options a resumed run must share with the run that wrote the checkpoint
RESUME_KEYS = ("seed", "batch_size", "grad_accum", "learning_rate", "warmup_ratio", "weight_decay",
               "total_steps", "train_examples")


class ResumeError(BadInput, ValueError):
    """A checkpoint written with other settings than the run resuming it."""


@dataclass
class TrainArgs:
    """Training options (transformers' TrainingArguments under shorter names)."""

    epochs: int = 3
    max_steps: int = 0  # > 0: this many updates, whatever the epochs
    learning_rate: float = 5e-5
    batch_size: int = 32
    grad_accum: int = 1
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0  # <= 0: no clipping
    eval_steps: int = 0  # > 0: evaluate every N updates and at the end, keep the best model
    save_steps: int = 0  # > 0: write a resumable checkpoint every N updates
    logging_steps: int = 50
    seed: int = 42
    progress: bool = True


@dataclass
class TrainState:
    step: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    log_history: list = field(default_factory=list)


def batch_order(n: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Example indices of each batch of `epoch`: a permutation seeded by (seed, epoch), the same for every
    backend; the last batch may be smaller."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return [order[start:start + batch_size] for start in range(0, n, batch_size)]


def dropout_seed(seed: int, step: int, micro: int) -> int:
    """The framework seed set before micro-batch `micro` of update `step`."""
    return int(np.random.SeedSequence([seed, step, micro]).generate_state(1)[0] >> 1)


def take(arrays: dict, index) -> dict:
    return {name: array[index] for name, array in arrays.items()}


def num_rows(arrays: dict) -> int:
    return len(next(iter(arrays.values())))


def model_arrays(runner, data: dict) -> dict:
    """The arrays of the inputs the runner's model declares (runner.input_names), failing naming any missing."""
    missing = [name for name in runner.input_names if name not in data]
    if missing:
        raise BadInput(f"the {runner.family} {runner.head} model reads {', '.join(runner.input_names)}; "
                       f"the data lacks {', '.join(missing)}")
    return {name: data[name] for name in runner.input_names}


def predict_all(runner, inputs: dict, batch_size: int, progress: bool = False) -> dict:
    """The runner's final outputs for every row of `inputs` (its declared model inputs), in order, as numpy arrays."""
    inputs = model_arrays(runner, inputs)
    starts = range(0, num_rows(inputs), batch_size)
    parts = [runner.predict(take(inputs, slice(start, start + batch_size)))
             for start in tqdm(starts, desc="predict", leave=False, disable=not progress)]
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def latest_checkpoint(output_dir) -> Path | None:
    """The checkpoint-<step> folder of `output_dir` with the highest step, if any."""
    found = [(int(p.name[len(CHECKPOINT_PREFIX):]), p) for p in Path(output_dir).glob(CHECKPOINT_PREFIX + "*")
             if p.is_dir() and p.name[len(CHECKPOINT_PREFIX):].isdigit()]
    return max(found)[1] if found else None


class Trainer:
    """Train a Runner on numpy arrays with a framework-free loss `loss_fn(ops, outputs, batch)`.

    save_model(folder) writes the model (weights, config, tokenizer); evaluate() -> metrics dict, with
    main_metric (greater is better) choosing the best model; prepare(batch) -> batch may add inputs
    (a distillation teacher's outputs) before each forward pass.
    """

    def __init__(self, runner, args: TrainArgs, train_data: dict, loss_fn, output_dir,
                 save_model: Callable | None = None, evaluate: Callable | None = None, main_metric: str | None = None,
                 prepare: Callable | None = None):
        self.runner, self.args, self.train_data, self.loss_fn = runner, args, train_data, loss_fn
        self.output_dir = Path(output_dir)
        self.save_model = save_model or (lambda folder: save_arrays(Path(folder) / WEIGHTS_FILE, runner.get_params()))
        self.evaluate, self.main_metric, self.prepare = evaluate, main_metric, prepare
        model_arrays(runner, train_data)  # every declared input is there
        self.examples = num_rows(train_data)
        self.steps_per_epoch = math.ceil(math.ceil(self.examples / args.batch_size) / args.grad_accum)
        self.total_steps = args.max_steps or args.epochs * self.steps_per_epoch
        self.warmup_steps = warmup_steps(self.total_steps, args.warmup_ratio)
        self.state = TrainState()
        self._epoch_batches = (None, None)
        runner.set_optimizer(AdamW.for_params(runner.params, weight_decay=args.weight_decay, beta1=args.adam_beta1,
                                              beta2=args.adam_beta2, eps=args.adam_epsilon))

    def run_settings(self) -> dict:
        return {**asdict(self.args), "total_steps": self.total_steps, "train_examples": self.examples}

    def micro_batches(self, step: int) -> list[np.ndarray]:
        """The index arrays of the (up to grad_accum) batches of update `step`."""
        epoch, position = divmod(step, self.steps_per_epoch)
        if self._epoch_batches[0] != epoch:
            self._epoch_batches = (epoch, batch_order(self.examples, self.args.batch_size, self.args.seed, epoch))
        accum = self.args.grad_accum
        return self._epoch_batches[1][position * accum:(position + 1) * accum]

    def train(self, resume_from=None) -> dict:
        """Run the updates from the current (or `resume_from` checkpoint's) step to the end; train metrics."""
        args = self.args
        if resume_from is not None:
            self.load_checkpoint(resume_from)
        start_step, samples, started = self.state.step, 0, time.perf_counter()
        bar = tqdm(total=self.total_steps, initial=start_step, desc="train", unit="step", disable=not args.progress)
        while self.state.step < self.total_steps:
            step = self.state.step
            batches = self.micro_batches(step)
            count = sum(len(index) for index in batches)
            loss = 0.0
            for micro, index in enumerate(batches):
                self.runner.seed(dropout_seed(args.seed, step, micro))
                batch = take(self.train_data, index)
                if self.prepare is not None:
                    batch = self.prepare(batch)
                weight = len(index) / count  # the update's loss is the mean over all its examples
                loss += weight * self.runner.forward_backward(batch, self.loss_fn, weight)
            samples += count
            lr = linear_lr(step, args.learning_rate, self.total_steps, self.warmup_steps)
            grad_norm = self.runner.optimizer_step(lr, args.max_grad_norm)
            self.state.step = step + 1
            self.state.log_history.append({"step": step + 1, "loss": loss, "learning_rate": lr, "grad_norm": grad_norm})
            bar.update()
            if args.logging_steps and self.state.step % args.logging_steps == 0:
                recent = [entry["loss"] for entry in self.state.log_history[-args.logging_steps:] if "loss" in entry]
                bar.set_postfix(loss=f"{np.mean(recent):.4f}", lr=f"{lr:.2e}")
            if self.evaluate is not None and args.eval_steps and (
                    self.state.step % args.eval_steps == 0 or self.state.step == self.total_steps):
                self.evaluate_and_keep_best()
            if args.save_steps and self.state.step % args.save_steps == 0:
                self.save_checkpoint()
        bar.close()
        runtime = time.perf_counter() - started
        losses = [entry["loss"] for entry in self.state.log_history if "loss" in entry]
        return {"train_loss": float(np.mean(losses)) if losses else float("nan"), "train_runtime": runtime,
                "train_samples_per_second": samples / runtime if runtime else 0.0,
                "train_steps_per_second": (self.state.step - start_step) / runtime if runtime else 0.0,
                "global_step": self.state.step, "epoch": self.state.step / self.steps_per_epoch}

    def evaluate_and_keep_best(self) -> dict:
        """Evaluate; when the main metric improves, save the model to output_dir/best."""
        metrics = self.evaluate()
        self.state.log_history.append({"step": self.state.step, "eval": metrics})
        value = metrics[self.main_metric]
        if self.state.best_metric is None or value > self.state.best_metric:
            self.state.best_metric, self.state.best_step = value, self.state.step
            self.write_folder(self.output_dir / BEST_DIR, with_optimizer=False, extra={"eval": metrics})
        return metrics

    def save_checkpoint(self) -> Path:
        """output_dir/checkpoint-<step>: model, optimizer moments and trainer state."""
        return self.write_folder(self.output_dir / f"{CHECKPOINT_PREFIX}{self.state.step}", with_optimizer=True)

    def write_folder(self, folder: Path, with_optimizer: bool, extra: dict | None = None) -> Path:
        """Write into a temporary sibling, then rename: an interrupted save leaves no half checkpoint."""
        partial = folder.with_name(f".{folder.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        self.save_model(partial)
        if with_optimizer:
            save_arrays(partial / OPTIMIZER_FILE, self.runner.optimizer_state())
        state = {**asdict(self.state), "settings": self.run_settings(), **(extra or {})}
        (partial / STATE_FILE).write_text(json.dumps(state, indent=1) + "\n")
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(partial, folder)
        return folder

    def load_checkpoint(self, folder) -> None:
        """Restore weights, optimizer moments and the trainer state written by save_checkpoint."""
        folder = Path(folder)
        saved = json.loads((folder / STATE_FILE).read_text())
        settings = self.run_settings()
        changed = [key for key in RESUME_KEYS if saved["settings"].get(key) != settings[key]]
        if changed:
            raise ResumeError(f"{folder}: cannot resume with other " + ", ".join(
                f"{key} ({saved['settings'].get(key)} there, {settings[key]} now)" for key in changed))
        self.state = TrainState(**{key: saved[key] for key in asdict(TrainState())})
        self.runner.set_params(dict(SafetensorsReader(folder / WEIGHTS_FILE)))
        self.runner.set_optimizer_state(dict(SafetensorsReader(folder / OPTIMIZER_FILE)))
