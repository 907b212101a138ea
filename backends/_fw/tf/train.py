"""TensorFlow step module: the Runner and op set of backends/_fw/torch/train.py, method by method.

Keras' Adam/AdamW add epsilon to sqrt(v) and fold both bias corrections into the step size
(lr * sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + eps)), torch adds it to the corrected
sqrt(v / (1 - beta2^t)): in effect Keras' epsilon is eps / sqrt(1 - beta2^t), a different optimizer in the
first steps and wherever v is small. So the AdamW update here is torch's formula written with tf ops,
in one tf.function.

Forward, loss and backward run eagerly by default (`--tf-compile eager`), op by op. `Runner.set_compile("function")`
(`--tf-compile function`) runs them as one tf.function per loss function, traced once per input shapes (a short
last batch traces again), and "xla" compiles that function with XLA (jit_compile); eval-mode forward passes are
compiled alike. A trace runs the Python once, so what it computes on the host becomes a constant of the graph:
- `--dropout-masks device` compiles exactly: the micro-batch's seed key and example positions are the traced
  function's tensor inputs and the per-row keys are computed from them in the graph (FedHashStream), the same
  integers as the eager step's host computation; the dropout call index is fixed by the forward order.
- no dropout (eval mode, or every rate 0) compiles exactly with any mask mode.
- `shared` masks stay eager (refused compiled): they are numpy draws on the host, in forward order, whose values
  other backends reproduce byte for byte; a trace would keep its first micro-batch's masks.
- `native` stays eager (refused compiled): TF's random ops inside a tf.function take their op seeds once, when
  traced, and keep their own state, which the per-micro-batch reseeding (exact resume with dropout) would not reach.
The loss functions (tasks/train/losses.py, tasks/distill.py) trace as they are (the ops below); forward_backward
converts the loss to a float after the call, and gradient accumulation adds the returned gradients outside it.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import random
import sys

import numpy as np
import tensorflow as tf
from tensorflow.python.eager import context

from backends import family as get_family
from backends.build import build_model, export_params, load_params
from backends.errors import BadInput
from ..amp import check_autocast
from ..dropout import (BATCH_FREE_KEY, HashStream, mask_stream, native_seed, row_key, rows_per_example,
                       share_dropout)
from ..freezing import trainable_names

from . import final_outputs_only, nn

# ---- the op set (contract.TrainOps) the framework-free losses (tasks/train/losses.py, tasks/distill.py) call


def cross_entropy(logits, labels):
    """Mean cross-entropy of integer labels over the last axis."""
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))


def masked_cross_entropy(logits, labels):
    """Mean cross-entropy over the positions whose label is not -100 (masked-LM labels); 0 when there are none."""
    # TF's sparse cross-entropy has no ignore_index (and refuses labels outside the vocabulary on CPU): the
    # scored positions are gathered first
    scored = tf.not_equal(labels, -100)
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.boolean_mask(labels, scored),
                                                            logits=tf.boolean_mask(logits, scored))
    return tf.reduce_sum(losses) / tf.maximum(tf.reduce_sum(tf.cast(scored, losses.dtype)), 1.0)


def mse(a, b):
    """Mean squared difference, both flattened (b cast to a's dtype)."""
    return tf.reduce_mean(tf.square(tf.reshape(a, [-1]) - tf.cast(tf.reshape(b, [-1]), a.dtype)))


def log_softmax(x):
    return tf.nn.log_softmax(x, axis=-1)


def softmax(x):
    return tf.nn.softmax(x, axis=-1)


def sum_last(x):
    return tf.reduce_sum(x, axis=-1)


def mean(x):
    return tf.reduce_mean(x)


def zero_where_below(x, threshold: float):
    """x with the entries <= threshold set to 0 (TinyBERT's masked attention scores)."""
    return tf.where(x <= threshold, tf.zeros_like(x), x)


OPS = sys.modules[__name__]
COMPILE_MODES = ("eager", "function", "xla")  # --tf-compile: eager ops, one tf.function, the tf.function through XLA
# a compiled eval pass is traced (and XLA-compiled) per input shape, the ports reading static shapes: predict cuts its
# batches to a multiple of this many positions, so that at most seq_len / COMPILED_WIDTH_STEP widths are traced
COMPILED_WIDTH_STEP = 32
TRIM_EVERY = 8  # updates between returns of freed heap memory (release_freed_memory)
_LIBC = ctypes.CDLL(ctypes.util.find_library("c"))


class MaskOps:
    """The tensor ops of the dropout masks (backends/_fw/dropout.py NumpyOps' members), placed by the Runner's
    tf.device scope."""

    def constant(self, array):
        return tf.convert_to_tensor(array)

    def arange(self, n: int):
        return tf.range(n, dtype=tf.int64)

    xor = staticmethod(tf.bitwise.bitwise_xor)
    reshape = staticmethod(tf.reshape)

    def scaled(self, keep, scale: float, float64: bool):
        return tf.cast(keep, tf.float64 if float64 else tf.float32) * scale


class FedHashStream(HashStream):
    """The HashStream of `--dropout-masks device` whose micro-batch keys can be inputs of a compiled step.

    HashStream computes each micro-batch's per-row keys on the host and makes them constants: a trace would keep
    those of the micro-batch it was traced on. Inside a compiled step (`fed`) the seed key and the example
    positions are the traced function's tensor inputs and the keys are computed from them in the graph, with the
    same integer formula (row_key), so every call draws its own micro-batch's masks, exactly the eager ones."""

    @contextlib.contextmanager
    def fed(self, seed_key, rows):
        """Inside: keys from `seed_key` (an int64 scalar tensor) and `rows` (int64 positions, or None: all)."""
        saved = self.seed_key, self.rows, self.calls, self.row_keys
        self.seed_key, self.rows, self.calls, self.row_keys = seed_key, rows, 0, {}
        try:
            yield
        finally:  # the trace's symbolic tensors must not outlive it
            self.seed_key, self.rows, self.calls, self.row_keys = saved

    def keys(self, batch: int):
        if not tf.is_tensor(self.seed_key):
            return super().keys(batch)
        if batch not in self.row_keys:
            rows = tf.range(batch, dtype=tf.int64) if self.rows is None else self.rows
            examples = int(rows.shape[0])
            per_example = rows_per_example(batch, examples)
            positions = tf.repeat(rows, per_example)
            within = tf.tile(tf.range(per_example, dtype=tf.int64), [examples])
            self.row_keys[batch] = row_key(self.seed_key, positions, within, tf.bitwise.bitwise_xor)
        return self.row_keys[batch]

    def batch_free_keys(self):
        if not tf.is_tensor(self.seed_key):
            return super().batch_free_keys()
        zero = tf.zeros([1], dtype=tf.int64)
        return row_key(self.seed_key, zero + BATCH_FREE_KEY, zero, tf.bitwise.bitwise_xor)


class SharedDropout(nn.Dropout):
    """nn.Dropout whose masks come from a MaskStream or HashStream (backends/_fw/dropout.py), the same in every
    backend."""

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        return x * tf.cast(self.masks.mask(x.shape, self.p, float64=x.dtype == tf.float64), x.dtype)


def named_layers(model):
    """(attribute name, layer) of every layer under `model` (torch's named_modules(), names one level deep)."""
    yield "", model
    for layer in model.modules():
        for name, value in vars(layer).items():
            items = enumerate(value) if isinstance(value, (list, tuple)) else [(None, value)]
            yield from ((name if index is None else f"{name}.{index}", item) for index, item in items
                        if isinstance(item, nn.Layer))


def release_freed_memory() -> None:
    """Hand the heap pages TF has freed back to the system.

    Eager TF (with TF_ENABLE_ONEDNN_OPTS=0, Eigen's kernels) allocates each step's large temporaries with
    malloc; once glibc has raised its mmap threshold they come from the heap, which fragments, and a
    MiniLM run grew ~100 MB per update until it was killed. malloc_trim returns the free pages (no-op
    where the C library has none). torch and paddle use their own caching allocators.
    """
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)


class Runner:
    """One model of a family and head in TensorFlow, torch's AdamW in tf ops, and the steps the driver calls."""

    def __init__(self, family: str, config, head: str, params=None, dtype: str = "float32", device: str = "cpu",
                 bf16: bool = False, seed: int = 0, dropout_masks: str = "shared", trainable=None, fp16: bool = False):
        # the TF ports compute in their parameters' dtype (nn layers have no autocast policy): refused, one line
        check_autocast("tf", device, dtype, bf16, fp16)
        self.family, self.head = family, head
        self.device = "/GPU:0" if device == "gpu" else "/CPU:0"  # unplaced, TF would pick a GPU by itself
        self.dtype = tf.as_dtype(dtype)
        with tf.device(self.device):
            self.model = build_model(family, "tf", config, head, params, dtype=dtype, seed=seed)
        tf.random.set_seed(seed)  # a global seed makes eager random ops take their seeds from `seed()` below
        self.params = dict(self.model.named_parameters())
        self.trainable = trainable_names(self.params, trainable)
        # the trained variables: only these are watched by the tape (frozen ones compute no gradient) and get
        # optimizer slots. A variable may stand for several canonical parameters (the BiLSTM's one Keras LSTM
        # bias is torch's bias_ih + bias_hh): torch updates each of them, so the sum moves `multiplicity` AdamW steps
        self.variables, self.names = [], []
        for name, variable in self.params.items():
            if name not in self.trainable:
                continue
            known = [i for i, v in enumerate(self.variables) if v is variable]
            if known:
                self.names[known[0]].append(name)
            else:
                self.variables.append(variable)
                self.names.append([name])
        self.rules = get_family(family).port_rules["tf"]
        self.final_outputs = get_family(family).prediction_outputs(head)
        self.input_names = get_family(family).input_names(config, head)
        # predict's batch cut per eval mode (set_compile picks trim_padding): exact when eager, when compiled to a
        # multiple of COMPILED_WIDTH_STEP positions
        self.trim_eager = get_family(family).padding_trimmer(config, head)
        self.trim_compiled = get_family(family).padding_trimmer(config, head, multiple=COMPILED_WIDTH_STEP)
        self.trim_padding = self.trim_eager
        self.trim_training = get_family(family).training_trimmer(config, head)  # the driver's micro-batches
        self.dropout_masks = dropout_masks
        self.masks = (FedHashStream(MaskOps(), seed) if dropout_masks == "device"
                      else mask_stream(dropout_masks, seed, MaskOps()))
        if self.masks is not None:
            share_dropout(named_layers(self.model), nn.Dropout, SharedDropout, self.masks, family, MaskOps())
        self.grads = [None] * len(self.variables)
        self.step_mode = self.eval_mode = "eager"  # how forward_backward and the eval-mode passes run
        self.compiled_steps, self.compiled_forward = {}, None  # loss_fn -> its tf.function; the eval forward's

    def set_compile(self, mode: str, train: bool = True) -> None:
        """Run forward, loss and gradients (and eval-mode forward passes) op by op ("eager", the default), as one
        tf.function traced once per input shapes ("function"), or that function compiled by XLA ("xla").
        train=False: the eval-mode passes alone (they drop nothing, so every mask mode compiles them).

        A compiled step is exact only where its dropout masks can be: none drops anything (p == 0), or
        `--dropout-masks device`, whose micro-batch keys become the function's inputs (FedHashStream). Refused
        otherwise: TF's own dropout (native) inside a tf.function takes its op seeds once, when traced, so the
        per-micro-batch reseeding (exact resume) would not reach it; shared masks are numpy draws on the host in
        forward order, which a trace would keep as the constants of its first micro-batch."""
        if mode not in COMPILE_MODES:
            raise BadInput(f"--tf-compile must be one of {', '.join(COMPILE_MODES)}, not {mode!r}")
        dropping = any(isinstance(layer, nn.Dropout) and layer.p > 0 for _, layer in named_layers(self.model))
        if train and mode != "eager" and dropping and self.dropout_masks != "device":
            raise BadInput(f"--tf-compile {mode} with --dropout-masks {self.dropout_masks}: a compiled training step "
                           "draws exact dropout masks only with --dropout-masks device (or no dropout); use that, or "
                           "--tf-compile eager")
        self.step_mode, self.eval_mode = mode if train else "eager", mode
        self.compiled_steps, self.compiled_forward = {}, None
        self.trim_padding = self.trim_eager if mode == "eager" else self.trim_compiled
        if mode != "eager":  # a compiled step is traced per input shape: training batches keep their padded width
            self.trim_training = None

    # ---- data and mode ----

    def to_tensors(self, batch: dict) -> dict:
        """numpy arrays -> tensors on the device (floats in the model dtype); other values pass through."""
        def convert(value):
            if not isinstance(value, np.ndarray):
                return value
            floating = np.issubdtype(value.dtype, np.floating)
            return tf.convert_to_tensor(np.ascontiguousarray(value, dtype=self.dtype.as_numpy_dtype if floating
                                                             else None))
        with tf.device(self.device):
            return {name: convert(value) for name, value in batch.items()}

    def forward(self, tensors: dict, train: bool):
        self.model.train(train)
        with tf.device(self.device):
            return self.model(**{name: tensors[name] for name in self.input_names if name in tensors})

    def seed(self, n: int, rows=None) -> None:
        """Seed dropout (the driver reseeds every micro-batch, so a resumed run draws the same masks); `rows`: the
        positions in the micro-batch of the examples this process holds (data-parallel; None: all)."""
        if self.masks is not None:
            self.masks.reseed(n, rows)
        else:
            # tf.random.set_seed also clears TF's kernel cache, and every op rebuilt after it makes a step ~10x
            # slower. Eager random ops draw their op seeds from the context's Python RNG: reseed only that one.
            # (A kernel is cached per seed pair, so a seed repeated in one process would continue its stream;
            # the driver never repeats one, and each Runner starts from a cleared cache.)
            context.context()._rng = random.Random(native_seed(n, rows))

    # ---- training ----

    def set_optimizer(self, settings) -> None:
        """torch's AdamW: moments per variable; no decay for `settings.no_decay` parameters."""
        self.settings = settings
        with tf.device(self.device):
            self.exp_avg = [tf.Variable(tf.zeros_like(v), trainable=False) for v in self.variables]
            self.exp_avg_sq = [tf.Variable(tf.zeros_like(v), trainable=False) for v in self.variables]
        self.decays = [names[0] not in settings.no_decay for names in self.names]
        self.steps = [0] * len(self.variables)
        self.updates = 0

    def forward_backward(self, batch: dict, loss_fn, scale: float = 1.0) -> float:
        """Add the gradients of scale * loss_fn(OPS, outputs, batch) to the accumulated ones; return the loss."""
        tensors = self.to_tensors(batch)
        if self.step_mode == "eager":
            loss, grads = self.gradients(tensors, loss_fn, scale)
        else:
            loss, grads = self.compiled_step(loss_fn)(tensors, tf.constant(scale, dtype=self.dtype),
                                                      *self.mask_inputs())
        with tf.device(self.device):
            self.grads = [g if g is None or acc is None else acc + g for acc, g in zip(self.grads, grads)]
        return float(loss)

    def gradients(self, tensors: dict, loss_fn, scale):
        """(loss, dense gradients of scale * loss): forward_backward's body, eager or traced."""
        # tf.Variables are trainable for good once made: the tape watches the trained ones alone instead
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(self.variables)
            loss = loss_fn(OPS, self.forward(tensors, train=True), tensors)
            scaled = loss * scale
        with tf.device(self.device):
            grads = tape.gradient(scaled, self.variables)  # None where a variable is unused, as torch's .grad
            # embedding gathers give IndexedSlices; torch accumulates dense gradients
            return loss, [g if g is None else tf.convert_to_tensor(g) for g in grads]

    def compiled_step(self, loss_fn):
        """`gradients` for `loss_fn` as a tf.function (XLA-compiled in "xla" mode), made once per loss function and
        traced once per input shapes (a short last batch traces again; shapes stay static, as the masks' and XLA's
        need). The micro-batch's mask keys are its inputs, so no trace keeps one micro-batch's masks."""
        if loss_fn not in self.compiled_steps:
            def step(tensors, scale, seed_key, rows):
                with self.masks.fed(seed_key, rows) if seed_key is not None else contextlib.nullcontext():
                    return self.gradients(tensors, loss_fn, scale)

            self.compiled_steps[loss_fn] = tf.function(step, jit_compile=self.step_mode == "xla")
        return self.compiled_steps[loss_fn]

    def mask_inputs(self) -> tuple:
        """(seed key, example positions or None) of the micro-batch's device masks as tensors; (None, None) without
        masks to feed."""
        if not isinstance(self.masks, FedHashStream):
            return None, None
        rows = None if self.masks.rows is None else tf.constant(self.masks.rows, dtype=tf.int64)
        return tf.constant(self.masks.seed_key, dtype=tf.int64), rows

    def optimizer_step(self, lr: float, max_grad_norm: float) -> float:
        """Clip the gradients to max_grad_norm (global norm), apply one AdamW update at `lr`, clear the
        gradients; return the global norm before clipping (max_grad_norm <= 0: no clipping)."""
        present = [i for i, g in enumerate(self.grads) if g is not None]
        s = self.settings
        # torch computes these scalars in Python (float64) per parameter from its step count
        decay, step_size, bias2_sqrt = [], [], []
        for i in present:
            self.steps[i] += 1
            decay.append(1 - lr * s.weight_decay if self.decays[i] else 1.0)
            step_size.append(len(self.names[i]) * lr / (1 - s.beta1 ** self.steps[i]))
            bias2_sqrt.append((1 - s.beta2 ** self.steps[i]) ** 0.5)
        scalars = [tf.constant(values, dtype=self.dtype) for values in (decay, step_size, bias2_sqrt)]
        with tf.device(self.device):
            norm = self._update(tuple(self.grads), *scalars,
                                tf.constant(max_grad_norm if max_grad_norm > 0 else np.inf, dtype=self.dtype))
        self.grads = [None] * len(self.variables)
        self.updates += 1
        if self.updates % TRIM_EVERY == 0:
            release_freed_memory()
        return float(norm)

    @tf.function
    def _update(self, grads, decay, step_size, bias2_sqrt, max_grad_norm):
        """torch's clip_grad_norm_ and AdamW step (torch/optim/adam.py, _single_tensor_adam) in tf ops."""
        s = self.settings
        present = [(i, g) for i, g in enumerate(grads) if g is not None]
        # the norm of the per-parameter norms, each canonical parameter counted once (as torch does)
        norm = tf.norm(tf.stack([tf.norm(g) for i, g in present for _ in self.names[i]]))
        coefficient = tf.minimum(max_grad_norm / (norm + 1e-6), 1.0)
        for j, (i, g) in enumerate(present):
            variable, exp_avg, exp_avg_sq = self.variables[i], self.exp_avg[i], self.exp_avg_sq[i]
            g = g * coefficient
            variable.assign(variable * decay[j])
            exp_avg.assign(exp_avg + (1 - s.beta1) * (g - exp_avg))  # exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.assign(exp_avg_sq * s.beta2 + g * g * (1 - s.beta2))
            denom = tf.sqrt(exp_avg_sq) / bias2_sqrt[j] + s.eps
            variable.assign(variable - step_size[j] * (exp_avg / denom))  # addcdiv_(exp_avg, denom, -step_size)
        return norm

    def discard_gradients(self) -> None:
        """Drop the accumulated gradients without an update (the driver skips a non-finite loss)."""
        self.grads = [None] * len(self.variables)

    # ---- state by canonical name ----

    def get_params(self) -> dict:
        return export_params(self.model, self.family, "tf")

    def set_params(self, params) -> None:
        load_params(self.model, params, self.family, "tf", source="checkpoint")

    def optimizer_state(self) -> dict:
        """{"exp_avg.<name>", "exp_avg_sq.<name>" (canonical layout), "step.<name>"} of every stepped parameter."""
        state = {}
        for i, names in enumerate(self.names):
            for name in names if self.steps[i] else ():
                state[f"step.{name}"] = np.asarray(self.steps[i], dtype=np.int64)
                state[f"exp_avg.{name}"] = self.rules.to_canonical(name, self.exp_avg[i].numpy())
                state[f"exp_avg_sq.{name}"] = self.rules.to_canonical(name, self.exp_avg_sq[i].numpy())
        return state

    def set_optimizer_state(self, state) -> None:
        for i, names in enumerate(self.names):
            name = names[0]
            if f"step.{name}" in state:
                self.steps[i] = int(state[f"step.{name}"])
                for slot, key in ((self.exp_avg[i], "exp_avg"), (self.exp_avg_sq[i], "exp_avg_sq")):
                    array = self.rules.to_target(name, np.asarray(state[f"{key}.{name}"]))[1]
                    slot.assign(np.asarray(array, dtype=self.dtype.as_numpy_dtype))

    # ---- inference ----

    def outputs(self, batch: dict) -> dict:
        """Eval-mode outputs as tensors (no tape records them: a distillation teacher's); one tf.function (per input
        shapes) where the step is compiled."""
        tensors = self.to_tensors(batch)
        if self.eval_mode == "eager":
            return self.forward(tensors, train=False)
        if self.compiled_forward is None:
            self.compiled_forward = tf.function(lambda inputs: self.forward(inputs, train=False),
                                                jit_compile=self.eval_mode == "xla")
        return self.compiled_forward({name: tensors[name] for name in self.input_names if name in tensors})

    def predict(self, batch: dict) -> dict:
        """The head's final outputs (logits, or start/end logits) as numpy, in eval mode."""
        with final_outputs_only():
            outputs = self.outputs(batch)
        return {name: outputs[name].numpy() for name in self.final_outputs}
