"""The framework-free training driver over a step module's Runner (backends/_fw/<framework>/train.py).

Everything that decides the trajectory lives here, the same for every backend: the batch order (a numpy
permutation seeded by (seed, epoch)), gradient accumulation, the learning rate of each update, the dropout
seed of each micro-batch, when to evaluate and save, and which evaluation was best. A checkpoint holds
the weights, the optimizer moments and the step; the batch position, the schedule position and the
dropout seeds all follow from the step, so a resumed run repeats the uninterrupted one exactly.

Data-parallel (a process group of backends/_fw/parallel.py): --batch-size is per process, and the micro-batches
are those one process with batch_size x processes would take; each process runs its contiguous run of rows
of each (their dropout masks keyed by position), the group sums gradients and loss once per update, and every
process applies the same update. Only the main process (rank 0) writes files; a checkpoint records the global
batch, so a run resumes on another process count with the same examples per update.
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

from backends._fw.amp import CLEAN_UPDATES, LOSS_SCALE
from backends._fw.parallel import SingleProcess, gather_rows
from backends.errors import BadInput
from backends.weights import check_finite
from backends.tensorfile import SafetensorsReader, save_arrays

from .optim import AdamWSettings, linear_lr, warmup_steps

WEIGHTS_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "trainer_state.json"
OPTIMIZER_SLOTS = ("step", "exp_avg", "exp_avg_sq")  # per parameter in OPTIMIZER_FILE
BETA_POWER_SLOTS = ("beta1_pow", "beta2_pow")  # the paddle runner's running beta powers, when it wrote the file
CHECKPOINT_PREFIX = "checkpoint-"
BEST_DIR = "best"
# options a resumed run must share with the run that wrote the checkpoint (global_batch_size: examples per
# update, batch_size x processes x grad_accum, so that another process count can resume)
RESUME_KEYS = ("seed", "global_batch_size", "grad_accum", "learning_rate", "warmup_ratio", "weight_decay",
               "total_steps", "train_examples")


class ResumeError(BadInput, ValueError):
    """A checkpoint that cannot be resumed: damaged, incomplete, or written with other settings."""


class TrainingDiverged(Exception):
    """The loss or the gradient norm became NaN or Inf. Not a usage error found before any work (those exit
    2): the command was valid and the run failed while training, so the CLI exits 1; checkpoints written
    before the failure stay valid."""

    exit_code = 1


NONFINITE_ADVICE = ("lower --learning-rate, keep --max-grad-norm on, try --dtype float64 (or no --bf16), check the "
                    "data, or resume from an earlier checkpoint")


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
    skip_nonfinite_loss: bool = False  # skip an update whose loss is NaN/Inf instead of stopping the run
    processes: int = 1  # data-parallel processes; batch_size is per process

    @property
    def micro_batch(self) -> int:
        """Rows of a micro-batch over all processes (what one process with the same global batch takes)."""
        return self.batch_size * self.processes

    @property
    def global_batch_size(self) -> int:
        """Examples per update: batch_size x processes x grad_accum."""
        return self.micro_batch * self.grad_accum


@dataclass
class TrainState:
    step: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    log_history: list = field(default_factory=list)
    skipped: int = 0  # updates skipped for a non-finite loss (--skip-nonfinite-loss)
    overflow_skipped: int = 0  # updates the fp16 loss scaler skipped (Inf/NaN gradients of a finite loss)


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


def predict_all(runner, inputs: dict, batch_size: int, progress: bool = False, group=None) -> dict:
    """The runner's final outputs for every row of `inputs` (its declared model inputs), in order, as numpy arrays.
    With a data-parallel `group`, each process predicts its contiguous run of rows and the group gathers them."""
    inputs = model_arrays(runner, inputs)
    if group is None or group.layout.size == 1:
        return _predict(runner, inputs, batch_size, progress)
    total = num_rows(inputs)
    rows = group.layout.rows(total)
    # a process without rows (fewer rows than processes) predicts one to learn the outputs' shapes
    local = _predict(runner, take(inputs, slice(rows[0], rows[-1] + 1) if len(rows) else slice(0, 1)), batch_size,
                     progress)
    return gather_rows(group, {name: array[:len(rows)] for name, array in local.items()}, total, rows)


def _predict(runner, inputs: dict, batch_size: int, progress: bool) -> dict:
    """Batch by batch; each batch cut to the positions its rows use where that cannot change the outputs
    (runner.trim_padding: FamilySpec.padding_trimmer), as dynamic padding would have built it."""
    trim = runner.trim_padding or (lambda batch: batch)
    starts = range(0, num_rows(inputs), batch_size)
    parts = [runner.predict(trim(take(inputs, slice(start, start + batch_size))))
             for start in tqdm(starts, desc="predict", leave=False, disable=not progress)]
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def schedule(examples: int, args: TrainArgs) -> tuple[int, int]:
    """(updates per epoch, updates of the run) for `examples` training rows."""
    steps_per_epoch = math.ceil(math.ceil(examples / args.micro_batch) / args.grad_accum)
    return steps_per_epoch, args.max_steps or args.epochs * steps_per_epoch


def latest_checkpoint(output_dir) -> Path | None:
    """The checkpoint-<step> folder of `output_dir` with the highest step, if any."""
    found = [(int(p.name[len(CHECKPOINT_PREFIX):]), p) for p in Path(output_dir).glob(CHECKPOINT_PREFIX + "*")
             if p.is_dir() and p.name[len(CHECKPOINT_PREFIX):].isdigit()]
    return max(found)[1] if found else None


class Trainer:
    """Train a Runner on numpy arrays with a framework-free loss `loss_fn(ops, outputs, batch)`.

    save_model(folder) writes the model (weights, config, tokenizer); evaluate() -> metrics dict, with
    main_metric (greater is better, unless greater_is_better is False) choosing the best model; prepare(batch)
    -> batch may add inputs (a distillation teacher's outputs) before each forward pass; dynamic_inputs(batch,
    step, micro) -> batch draws inputs anew for each micro-batch (masked-LM masks) from its update and position;
    load_weights(folder) -> every parameter of a checkpoint folder save_model wrote (an adapter run's holds the
    adapter and head alone). `group`: the data-parallel process group (backends/_fw/parallel.py) of
    args.processes processes; the evaluation, when given, must be collective too.
    """

    def __init__(self, runner, args: TrainArgs, train_data: dict, loss_fn, output_dir,
                 save_model: Callable | None = None, evaluate: Callable | None = None, main_metric: str | None = None,
                 prepare: Callable | None = None, load_weights: Callable | None = None,
                 dynamic_inputs: Callable | None = None, greater_is_better: bool = True, group=None,
                 objective: dict | None = None):
        self.runner, self.args, self.train_data, self.loss_fn = runner, args, train_data, loss_fn
        self.objective = objective
        self.load_weights = load_weights or (lambda folder: read_finite(Path(folder) / WEIGHTS_FILE))
        self.group = group or SingleProcess()
        if self.group.layout.size != args.processes:
            raise ValueError(f"TrainArgs.processes is {args.processes}, the group has {self.group.layout.size}")
        self.output_dir = Path(output_dir)
        self.save_model = save_model or (lambda folder: save_arrays(Path(folder) / WEIGHTS_FILE, runner.get_params()))
        self.evaluate, self.main_metric, self.prepare = evaluate, main_metric, prepare
        self.dynamic_inputs, self.greater_is_better = dynamic_inputs, greater_is_better
        model_arrays(runner, train_data)  # every declared input is there
        self.examples = num_rows(train_data)
        self.steps_per_epoch, self.total_steps = schedule(self.examples, args)
        self.warmup_steps = warmup_steps(self.total_steps, args.warmup_ratio)
        self.state = TrainState()
        self.consecutive_skips = 0  # updates skipped since the last applied one
        self._epoch_batches = (None, None)
        runner.set_optimizer(AdamWSettings.for_params(runner.params, weight_decay=args.weight_decay, beta1=args.adam_beta1,
                                              beta2=args.adam_beta2, eps=args.adam_epsilon))

    def run_settings(self) -> dict:
        return run_settings(self.args, self.examples, self.objective)

    def micro_batches(self, step: int) -> list[np.ndarray]:
        """The index arrays of the (up to grad_accum) batches of update `step`."""
        epoch, position = divmod(step, self.steps_per_epoch)
        if self._epoch_batches[0] != epoch:
            self._epoch_batches = (epoch, batch_order(self.examples, self.args.micro_batch, self.args.seed, epoch))
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
                rows = self.group.layout.rows(len(index))  # this process's run of the micro-batch (all of it alone)
                self.runner.seed(dropout_seed(args.seed, step, micro), rows)
                if not len(rows):  # a short last batch split over more processes than it has rows
                    continue
                batch = take(self.train_data, index)
                if self.dynamic_inputs is not None:  # drawn for the whole micro-batch, as one process draws them
                    batch = self.dynamic_inputs(batch, step, micro)
                batch = take(batch, rows)
                if self.prepare is not None:
                    batch = self.prepare(batch)
                if self.runner.trim_training is not None:  # where the family's step cannot depend on the padding
                    batch = self.runner.trim_training(batch)
                weight = len(rows) / count  # the update's loss is the mean over all its examples
                micro_loss = self.runner.forward_backward(batch, self.loss_fn, weight)
                if not math.isfinite(micro_loss):
                    loss = micro_loss
                    break  # the update is skipped or the run stops: its other micro-batches are not needed
                loss += weight * micro_loss
            if self.group.layout.size > 1:  # every process then holds the sums: they take the same decisions
                loss = self.group.sum_gradients(self.runner, loss)
            samples += count
            lr = linear_lr(step, args.learning_rate, self.total_steps, self.warmup_steps)
            if not math.isfinite(loss):
                self.skip_update(step, loss, lr, micro)
            else:
                grad_norm = self.runner.optimizer_step(lr, args.max_grad_norm)
                if grad_norm is None:  # --fp16: the loss scaler found Inf/NaN gradients, skipped the update and
                    self.state.overflow_skipped += 1  # lowered its scale (transformers' Trainer does the same)
                    self.state.log_history.append({"step": step + 1, "loss": loss, "learning_rate": lr,
                                                   "skipped": "gradient overflow (fp16 loss scaler)"})
                elif not math.isfinite(grad_norm):  # the update has been applied: the weights are lost
                    raise TrainingDiverged(f"the gradient norm is {grad_norm} at update {step + 1} (the loss was "
                                           f"{loss:.4g}); the weights are no longer finite: {NONFINITE_ADVICE}")
                else:
                    self.state.log_history.append({"step": step + 1, "loss": loss, "learning_rate": lr,
                                                   "grad_norm": grad_norm})
                self.consecutive_skips = 0
            self.state.step = step + 1
            bar.update()
            recent = [entry["loss"] for entry in self.state.log_history[-args.logging_steps:] if "loss" in entry]
            if args.logging_steps and self.state.step % args.logging_steps == 0 and recent:
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
                "global_step": self.state.step, "epoch": self.state.step / self.steps_per_epoch,
                "train_skipped_updates": self.state.skipped, "train_overflow_skipped_updates": self.state.overflow_skipped}

    def skip_update(self, step: int, loss: float, lr: float, micro: int) -> None:
        """A non-finite loss at update `step`: stop (TrainingDiverged), or with --skip-nonfinite-loss drop its
        gradients, count it and go on, unless the weights themselves are no longer finite."""
        where = f"update {step + 1} (micro-batch {micro + 1} of {len(self.micro_batches(step))})"
        if not self.args.skip_nonfinite_loss:
            raise TrainingDiverged(f"the loss is {loss} at {where}: {NONFINITE_ADVICE}; or give "
                                   "--skip-nonfinite-loss to skip such updates")
        self.runner.discard_gradients()
        broken = next((name for name, array in self.runner.get_params().items()
                       if not np.isfinite(array).all()), None)
        if broken is not None:  # every later loss would be NaN too: skipping would train nothing
            raise TrainingDiverged(f"the loss is {loss} at {where} because the weights are no longer finite "
                                   f"({broken}): {NONFINITE_ADVICE}")
        self.state.skipped += 1
        self.consecutive_skips += 1
        self.state.log_history.append({"step": step + 1, "skipped": f"loss {loss}", "learning_rate": lr})
        if self.consecutive_skips >= min(self.steps_per_epoch, self.total_steps):
            # an epoch's worth of updates in a row (or all of a shorter run): the model, not a batch, is broken
            raise TrainingDiverged(f"the loss is non-finite at {self.consecutive_skips} updates in a row, up to "
                                   f"update {step + 1}: {NONFINITE_ADVICE}")

    def evaluate_and_keep_best(self) -> dict:
        """Evaluate; when the main metric improves, save the model to output_dir/best."""
        metrics = self.evaluate()
        self.state.log_history.append({"step": self.state.step, "eval": metrics})
        value = metrics[self.main_metric]
        best = self.state.best_metric
        if best is None or (value > best if self.greater_is_better else value < best):
            self.state.best_metric, self.state.best_step = value, self.state.step
            if self.group.layout.main:
                self.write_folder(self.output_dir / BEST_DIR, with_optimizer=False, extra={"eval": metrics})
        return metrics

    def save_checkpoint(self) -> Path:
        """output_dir/checkpoint-<step>: model, optimizer moments and trainer state (by the main process only)."""
        if not self.group.layout.main:
            return None
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
        """Restore weights, optimizer moments and the trainer state written by save_checkpoint.

        Everything is checked before anything is set: a damaged or incomplete trainer_state.json, a step
        at or past the run's last one, a missing or empty optimizer file (the moments would silently
        start from zero), NaN/Inf weights or moments all raise ResumeError (or WeightsError) naming the
        file and key.
        """
        folder = Path(folder)
        saved = check_resume_state(folder, self.total_steps, self.args, self.examples, self.objective)
        step = saved["step"]
        weights = self.load_weights(folder)
        moments = read_finite(folder / OPTIMIZER_FILE)
        check_optimizer_state(folder / OPTIMIZER_FILE, moments, weights, set(self.runner.trainable),
                              applied=step - saved.get("skipped", 0))
        self.state = TrainState(**{key: saved.get(key, default) for key, default in asdict(TrainState()).items()})
        self.runner.set_params(weights)
        self.runner.set_optimizer_state(moments)


def run_settings(args: TrainArgs, examples: int, objective: dict | None = None) -> dict:
    """The settings a checkpoint records (RESUME_KEYS among them) of a run of `args` over `examples` rows, and the
    `objective`'s (the task, its data options, a distillation's loss: the job's objective_settings) when given."""
    settings = {**asdict(args), "total_steps": schedule(examples, args)[1], "train_examples": examples,
                "global_batch_size": args.global_batch_size}
    return settings if objective is None else {**settings, "objective": objective}


def check_settings(folder: Path, saved: dict, args: TrainArgs, examples: int, objective: dict | None = None) -> None:
    """ResumeError unless the checkpoint's settings (`saved`) agree with this run's on RESUME_KEYS and on every
    `objective` setting it recorded (checkpoints written before they were recorded have none to compare); a changed
    global batch names the --batch-size that gives it on this process count, or says that none can."""
    settings = run_settings(args, examples)
    # checkpoints older than data-parallel training: one process, batch_size x grad_accum examples per update
    there = {"global_batch_size": saved.get("batch_size", 0) * saved.get("grad_accum", 1), **saved}
    changed = [key for key in RESUME_KEYS if there.get(key) != settings[key]]
    if changed == ["global_batch_size"]:
        per_update, split = there["global_batch_size"], args.processes * args.grad_accum
        what = (f"{folder}: cannot resume with other global_batch_size ({per_update} there, {args.global_batch_size} "
                "now: examples per update, --batch-size x processes x --grad-accum)")
        if per_update % split:
            raise ResumeError(f"{what}; {args.processes} processes x --grad-accum {args.grad_accum} cannot split "
                              f"{per_update} evenly: resume on a process count that divides {per_update // args.grad_accum}")
        raise ResumeError(f"{what}; on {args.processes} process(es) give --batch-size {per_update // split}")
    stored_objective = saved.get("objective")
    if objective is not None and isinstance(stored_objective, dict):
        changed += [key for key in objective if key in stored_objective and stored_objective[key] != objective[key]]
        there, settings = {**stored_objective, **there}, {**objective, **settings}
    if changed:
        raise ResumeError(f"{folder}: cannot resume with other " + ", ".join(
            f"{key} ({there.get(key)} there, {settings[key]} now)" for key in changed))


def check_resume_state(folder, total_steps: int, args: TrainArgs | None = None, examples: int = 0,
                       objective: dict | None = None) -> dict:
    """The checked trainer state of checkpoint `folder`, whose step must lie before `total_steps` and, given the
    run's `args` (and `objective`), whose settings agree with them (framework-free: the CLI calls it before a model
    loads, load_checkpoint again)."""
    folder = Path(folder)
    saved = read_trainer_state(folder / STATE_FILE)
    step = saved["step"]
    if step >= total_steps:
        reached = "past" if step > total_steps else "at"
        raise ResumeError(f"{folder}: the checkpoint is at step {step}, {reached} this run's last step {total_steps} "
                          "(--max-steps, or --epochs): nothing left to train")
    number = folder.name[len(CHECKPOINT_PREFIX):]
    if folder.name.startswith(CHECKPOINT_PREFIX) and number.isdigit() and int(number) != step:
        raise ResumeError(f"{folder / STATE_FILE}: step {step} does not match the folder name {folder.name}")
    if args is not None:
        check_settings(folder, saved["settings"], args, examples, objective)
    return saved


def read_trainer_state(path: Path) -> dict:
    """trainer_state.json of a checkpoint, its keys and types checked; ResumeError names the file and key."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResumeError(f"{path}: missing; not a checkpoint folder (--save-steps writes them)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResumeError(f"{path}: damaged ({exc}); resume from an earlier checkpoint") from None
    if not isinstance(saved, dict):
        raise ResumeError(f"{path}: damaged (not a JSON object); resume from an earlier checkpoint")
    expected = {"step": int, "settings": dict, "log_history": list, "best_metric": (int, float, type(None)),
                "best_step": (int, type(None)), "skipped": int}
    for key, kind in expected.items():
        if key not in saved and key != "skipped":  # checkpoints older than --skip-nonfinite-loss lack it
            raise ResumeError(f"{path}: damaged or incomplete (no {key!r}); resume from an earlier checkpoint")
        value = saved.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, kind) or (isinstance(value, int) and value < 0):
            raise ResumeError(f"{path}: damaged ({key!r} is {value!r}); resume from an earlier checkpoint")
    if saved.get("skipped", 0) > saved["step"]:
        raise ResumeError(f"{path}: damaged ({saved['skipped']} updates skipped of {saved['step']})")
    if not all(isinstance(entry, dict) and isinstance(entry.get("loss", 0.0), (int, float))
               for entry in saved["log_history"]):
        raise ResumeError(f"{path}: damaged ('log_history' entries); resume from an earlier checkpoint")
    return saved


def read_finite(path: Path) -> dict:
    """Every tensor of a checkpoint file; WeightsError naming the file and tensor when one holds NaN or Inf."""
    arrays = dict(SafetensorsReader(path))
    for name, array in arrays.items():
        check_finite(name, array, str(path))
    return arrays


def check_optimizer_state(path: Path, state: dict, weights: dict, params: set, applied: int) -> None:
    """The moments must cover what set_optimizer_state reads: step.N, exp_avg.N and exp_avg_sq.N of known
    parameters N (`params`: the ones the run trains), shaped as the weights, and at least one parameter once an update was `applied` (the
    runners skip what they do not find, which would restart those moments from zero without a word)."""
    names: dict[str, set] = {}
    scaler_keys = (LOSS_SCALE, CLEAN_UPDATES)  # the fp16 loss scaler's, when the run had one
    for key in (key for key in scaler_keys if key in state):
        value = state[key]
        if value.shape != () or not (value > 0 if key == LOSS_SCALE else value >= 0) or not np.isfinite(value):
            raise ResumeError(f"{path}: {key} is {value.tolist()!r}, not a loss scale state")
    for key in (key for key in state if key not in scaler_keys):
        slot, _, name = key.partition(".")
        if slot not in OPTIMIZER_SLOTS + BETA_POWER_SLOTS or not name:
            raise ResumeError(f"{path}: unexpected entry {key!r} (expected step./exp_avg./exp_avg_sq.<parameter>)")
        names.setdefault(name, set()).add(slot)
    if applied > 0 and not names:
        raise ResumeError(f"{path}: holds no optimizer state; resuming would restart the AdamW moments from zero")
    for name, slots in sorted(names.items()):
        if name not in params:
            raise ResumeError(f"{path}: moments of {name!r}, which this run does not train (the model lacks it, "
                              "or it is frozen)")
        if not slots >= set(OPTIMIZER_SLOTS):
            raise ResumeError(f"{path}: {name!r} lacks {', '.join(sorted(set(OPTIMIZER_SLOTS) - slots))}")
        for slot in slots & set(BETA_POWER_SLOTS):
            power = state[f"{slot}.{name}"]
            if power.size != 1 or not 0 < float(power.reshape(())) <= 1:
                raise ResumeError(f"{path}: {slot}.{name} is {power.tolist()!r}, not a power of a beta in (0, 1]")
        if name in weights and any(tuple(state[f"{slot}.{name}"].shape) != tuple(weights[name].shape)
                                   for slot in OPTIMIZER_SLOTS[1:]):
            raise ResumeError(f"{path}: the moments of {name!r} do not have its shape {list(weights[name].shape)}")
        count = state[f"step.{name}"]
        if count.shape != () or not np.issubdtype(count.dtype, np.integer) or not 0 < int(count) <= applied:
            raise ResumeError(f"{path}: step.{name} is {count.tolist()!r}, not an update count in 1..{applied}")
        if (state[f"exp_avg_sq.{name}"] < 0).any():
            raise ResumeError(f"{path}: exp_avg_sq.{name} holds negative values")
