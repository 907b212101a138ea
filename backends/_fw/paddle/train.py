"""PaddlePaddle step module: the Runner and op set of backends/_fw/torch/train.py, method by method.

paddle.optimizer.AdamW computes torch's AdamW update (its docstring writes the bias corrections and
the decay differently; the kernel matches torch, see tests/tasks/test_train_parity.py); what differs
is marked where it is handled: parameter names, clipping, and the optimizer state's layout.
"""
from __future__ import annotations

import contextlib
import math
import sys

import numpy as np
import paddle
import paddle.nn.functional as F

from backends import family as get_family
from backends.build import build_model, export_params, load_params
from ..amp import CLEAN_UPDATES, LOSS_SCALE, check_autocast, loss_scaler_state
from ..dropout import mask_stream, native_seed, share_dropout
from ..freezing import trainable_names
from . import dense_kernels, final_outputs_only

# ---- the op set (contract.TrainOps) the framework-free losses (tasks/train/losses.py, tasks/distill.py) call


def cross_entropy(logits, labels):
    """Mean cross-entropy of integer labels over the last axis (its mean: `mean` below)."""
    return mean(F.cross_entropy(logits, labels, reduction="none"))


def masked_cross_entropy(logits, labels):
    """Mean cross-entropy over the positions whose label is not -100 (masked-LM labels); 0 when there are none."""
    labels = labels.reshape([-1])
    total = F.cross_entropy(logits.reshape([labels.shape[0], -1]), labels, ignore_index=-100, reduction="sum")
    return total / paddle.clip((labels != -100).astype(total.dtype).sum(), min=1.0)


def mse(a, b):
    """Mean squared difference, both flattened (b cast to a's dtype); `mean` below, not F.mse_loss (its mean)."""
    difference = a.reshape([-1]) - b.reshape([-1]).astype(a.dtype)
    return mean(difference * difference)


def log_softmax(x):
    return F.log_softmax(x, axis=-1)


def softmax(x):
    return F.softmax(x, axis=-1)


def sum_last(x):
    return x.sum(-1)


def mean(x):
    """The whole tensor's sum / its size. paddle's CPU mean kernel (F.mse_loss's, F.cross_entropy's too) adds a
    float32 tensor up in one running sum: 3.2e-4 relative off over 6.3M random squares (the size of a 32 x 12 x
    128 x 128 batch of attention scores; TinyBERT's general stage reported every loss 0.01 low), where torch's and
    TF's means are 2.6e-8 off and paddle's whole-tensor sum 1.9e-8. The gradient, 1/size per entry, is the
    same either way. Below float32 (paddle.amp on GPU) the sum runs in float32: a float16 sum of millions of
    entries passes float16's largest value (65504), where the mean kernel accumulated in float32 too."""
    if x.dtype in (paddle.float16, paddle.bfloat16):
        x = x.astype(paddle.float32)
    return x.sum() / math.prod(x.shape)


def zero_where_below(x, threshold: float):
    """x with the entries <= threshold set to 0 (TinyBERT's masked attention scores)."""
    return paddle.where(x <= threshold, paddle.zeros_like(x), x)


OPS = sys.modules[__name__]


class MaskOps:
    """The tensor ops of the dropout masks (backends/_fw/dropout.py NumpyOps' members) on paddle's device."""

    def constant(self, array):
        return paddle.to_tensor(array)  # on the global device (paddle.set_device)

    def arange(self, n: int):
        return paddle.arange(n, dtype="int64")

    @staticmethod
    def xor(a, b):
        # paddle.bitwise_xor takes tensors only (torch's and tf's also take a Python int)
        return paddle.bitwise_xor(a, b if isinstance(b, paddle.Tensor) else paddle.full([1], b, dtype="int64"))

    reshape = staticmethod(paddle.reshape)

    def scaled(self, keep, scale: float, float64: bool):
        return keep.astype("float64" if float64 else "float32") * scale


class SharedDropout(paddle.nn.Dropout):
    """nn.Dropout whose masks come from a MaskStream or HashStream (backends/_fw/dropout.py), the same in every
    backend."""

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        return x * self.masks.mask(x.shape, self.p, float64=x.dtype == paddle.float64).astype(x.dtype)


class Runner:
    """One model of a family and head in Paddle, its AdamW, and the steps the driver calls."""

    def __init__(self, family: str, config, head: str, params=None, dtype: str = "float32", device: str = "cpu",
                 bf16: bool = False, seed: int = 0, dropout_masks: str = "shared", trainable=None, fp16: bool = False):
        self.family, self.head = family, head
        paddle.set_device("gpu" if device == "gpu" else "cpu")  # paddle places tensors by a global device
        self.dtype = dtype
        check_autocast("paddle", device, dtype, bf16, fp16)  # paddle.amp acts on GPU only
        self.amp_dtype = "bfloat16" if bf16 else "float16" if fp16 else None
        # float16's loss scaler: paddle.amp.GradScaler (dynamic scale, an overflowing update skipped) with torch's
        # GradScaler defaults: paddle's own halve the scale after 2 overflows in a row (decr_every_n_nan_or_inf)
        # and double it after 1000 clean updates; torch's after every overflow and after 2000
        self.scaler = paddle.amp.GradScaler(init_loss_scaling=2.0 ** 16, incr_ratio=2.0, decr_ratio=0.5,
                                            incr_every_n_steps=2000, decr_every_n_nan_or_inf=1) if fp16 else None
        self.model = build_model(family, "paddle", config, head, params, dtype=dtype, seed=seed)
        self.params = dict(self.model.named_parameters())
        self.trainable = trainable_names(self.params, trainable)
        for name, param in self.params.items():  # paddle's name for requires_grad=False
            param.stop_gradient = name not in self.trainable
        self.rules = get_family(family).port_rules["paddle"]
        self.final_outputs = get_family(family).prediction_outputs(head)
        self.input_names = get_family(family).input_names(config, head)
        self.trim_padding = get_family(family).padding_trimmer(config, head)  # predict's batches
        self.trim_training = get_family(family).training_trimmer(config, head)  # the driver's micro-batches
        self.masks = mask_stream(dropout_masks, seed, MaskOps())
        if self.masks is not None:
            share_dropout(self.model.named_sublayers(include_self=True), paddle.nn.Dropout, SharedDropout,
                          self.masks, family, MaskOps())
        self.optimizer = None

    # ---- data and mode ----

    def to_tensors(self, batch: dict) -> dict:
        """numpy arrays -> tensors on the device (floats in the model dtype); other values pass through."""
        def convert(value):
            if not isinstance(value, np.ndarray):
                return value
            floating = np.issubdtype(value.dtype, np.floating)
            return paddle.to_tensor(np.ascontiguousarray(value, dtype=self.dtype if floating else None))
        return {name: convert(value) for name, value in batch.items()}

    def autocast(self):
        """bfloat16 (--bf16) or float16 (--fp16) autocast on GPU; a no-op otherwise."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return paddle.amp.auto_cast(dtype=self.amp_dtype, level="O1")

    def forward(self, tensors: dict, train: bool):
        self.model.train() if train else self.model.eval()  # paddle's train() takes no mode argument
        with self.autocast():
            return self.model(**{name: tensors[name] for name in self.input_names if name in tensors})

    def seed(self, n: int, rows=None) -> None:
        """Seed dropout (the driver reseeds every micro-batch, so a resumed run draws the same masks); `rows`: the
        positions in the micro-batch of the examples this process holds (data-parallel; None: all)."""
        if self.masks is not None:
            self.masks.reseed(n, rows)
        else:
            paddle.seed(native_seed(n, rows))

    # ---- training ----

    def set_optimizer(self, settings) -> None:
        """paddle.optimizer.AdamW (decoupled decay) over the trainable parameters; no decay for
        `settings.no_decay` parameters."""
        # apply_decay_param_fun receives paddle's internal tensor names (linear_3.w_0), not ours
        canonical = {param.name: name for name, param in self.params.items()}
        self.optimizer = paddle.optimizer.AdamW(
            learning_rate=0.0, beta1=settings.beta1, beta2=settings.beta2, epsilon=settings.eps,
            parameters=[p for n, p in self.params.items() if n in self.trainable], weight_decay=settings.weight_decay,
            apply_decay_param_fun=lambda internal: canonical[internal] not in settings.no_decay)
        self.beta1, self.beta2 = settings.beta1, settings.beta2
        self.steps = {}  # paddle keeps no step count (it multiplies running beta powers); torch does

    def forward_backward(self, batch: dict, loss_fn, scale: float = 1.0) -> float:
        """Add the gradients of scale * loss_fn(OPS, outputs, batch) to the accumulated ones; return the loss."""
        tensors = self.to_tensors(batch)
        # view ops on dense kernels, forward and backward (dense_kernels: a strided view costs a generic copy kernel
        # inside the next op; MiniLM's training step 1.3x faster); nothing here writes into a view
        with dense_kernels():
            with self.autocast():  # the loss too, as torch's runner
                loss = loss_fn(OPS, self.forward(tensors, train=True), tensors)
            scaled = loss * scale
            (scaled if self.scaler is None else self.scaler.scale(scaled)).backward()
        return float(loss)

    def optimizer_step(self, lr: float, max_grad_norm: float) -> float | None:
        """Clip the gradients to max_grad_norm (global norm), apply one AdamW update at `lr`, clear the
        gradients; return the global norm before clipping (max_grad_norm <= 0: no clipping). With a loss scaler
        (--fp16): None when the gradients overflowed, the update skipped and the scale lowered."""
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)  # clipping sees the true gradients
        stepped = [name for name, p in self.params.items() if p.grad is not None]
        grads = [self.params[name].grad for name in stepped]
        # torch's clip_grad_norm_ scales by min(1, max_norm / (norm + 1e-6)); paddle's ClipGradByGlobalNorm
        # by max_norm / max(norm, max_norm), without the 1e-6: apply torch's coefficient to the gradients.
        # The global norm is sqrt of the summed squares: paddle.linalg.norm's float32 kernel (p_norm) raises every
        # element to a general power (4x slower) and loses accuracy with size: on a dense standard-normal tensor of
        # the MiniLM embedding's 11.7M values it gives 3388.8 for 3423.5 (1% low); square().sum() gives 3423.52
        norm = paddle.sqrt(paddle.stack([paddle.square(g).sum() for g in grads]).sum())
        if max_grad_norm > 0:
            coefficient = paddle.clip(max_grad_norm / (norm + 1e-6), max=1.0)
            with paddle.no_grad():  # in-place on a leaf's gradient is refused while gradients are recorded
                for g in grads:
                    g.multiply_(coefficient)
        self.optimizer.set_lr(lr)
        # paddle names an optimizer's moments <param>_moment1_<n>, n counting the optimizers this process made (a
        # second Trainer on one Runner would get _1): a fresh name generator gives each optimizer the _0 names that
        # optimizer_state and set_optimizer_state use
        with paddle.utils.unique_name.guard():
            if self.scaler is None:
                self.optimizer.step()
            else:  # GradScaler.step skips the update when unscale_ found an Inf/NaN gradient; update() lowers the scale
                self.scaler.step(self.optimizer)
                self.scaler.update()
        self.optimizer.clear_grad(set_to_zero=False)
        norm = float(norm)
        if self.scaler is not None and not math.isfinite(norm):
            return None
        for name in stepped:
            self.steps[name] = self.steps.get(name, 0) + 1
        return norm

    def discard_gradients(self) -> None:
        """Drop the accumulated gradients without an update (the driver skips a non-finite loss)."""
        self.optimizer.clear_grad(set_to_zero=False)

    # ---- state by canonical name ----

    def get_params(self) -> dict:
        return export_params(self.model, self.family, "paddle")

    def set_params(self, params) -> None:
        load_params(self.model, params, self.family, "paddle", source="checkpoint")

    def optimizer_state(self) -> dict:
        """{"exp_avg.<name>", "exp_avg_sq.<name>" (canonical layout), "step.<name>"} of every stepped parameter,
        plus paddle's running beta powers "beta1_pow.<name>", "beta2_pow.<name>"."""
        # the running powers (beta^(t+1) after t steps, a product, not beta ** (t+1)) are saved too, so a
        # paddle run resumes bit-identically; state from another backend gives only the step
        stored = self.optimizer.state_dict()
        state = {}
        for name, step in self.steps.items():
            internal = self.params[name].name
            state[f"step.{name}"] = np.asarray(step, dtype=np.int64)
            for moment, key in (("moment1", "exp_avg"), ("moment2", "exp_avg_sq")):
                state[f"{key}.{name}"] = self.rules.to_canonical(name, stored[f"{internal}_{moment}_0"].numpy())
            for index in (1, 2):
                state[f"beta{index}_pow.{name}"] = stored[f"{internal}_beta{index}_pow_acc_0"].numpy().reshape(())
        if self.scaler is not None:
            scaler = self.scaler.state_dict()
            state.update(loss_scaler_state(float(np.asarray(scaler["scale"]).reshape(-1)[0]), scaler["incr_count"]))
        return state

    def set_optimizer_state(self, state) -> None:
        stored = {}
        self.steps = {name: int(state[f"step.{name}"]) for name in self.params if f"step.{name}" in state}
        for name, step in self.steps.items():
            param = self.params[name]
            for moment, key in (("moment1", "exp_avg"), ("moment2", "exp_avg_sq")):
                array = self.rules.to_target(name, np.asarray(state[f"{key}.{name}"]))[1]
                stored[f"{param.name}_{moment}_0"] = paddle.to_tensor(np.asarray(array, dtype=self.dtype))
            for index, beta in ((1, self.beta1), (2, self.beta2)):
                power = state.get(f"beta{index}_pow.{name}", beta ** (step + 1))  # state from another backend
                stored[f"{param.name}_beta{index}_pow_acc_0"] = paddle.to_tensor(
                    np.asarray(power, dtype=self.dtype).reshape([1]), place=paddle.CPUPlace())
        self.optimizer.set_state_dict(stored)
        if self.scaler is not None and LOSS_SCALE in state:
            self.scaler.load_state_dict({**self.scaler.state_dict(), "incr_count": int(state[CLEAN_UPDATES]),
                                         "decr_count": 0,
                                         "scale": np.asarray([float(state[LOSS_SCALE])], dtype=np.float32)})

    # ---- inference ----

    def outputs(self, batch: dict) -> dict:
        """Eval-mode outputs as tensors, without gradients (a distillation teacher's), view ops on dense kernels."""
        with paddle.no_grad(), dense_kernels():
            return self.forward(self.to_tensors(batch), train=False)

    def predict(self, batch: dict) -> dict:
        """The head's final outputs (logits, or start/end logits) as numpy, in eval mode (LayerNorm on paddle's fused
        kernel below float64: backends/_fw/paddle/nn.py, fused_layer_norm)."""
        with final_outputs_only():
            outputs = self.outputs(batch)
        return {name: outputs[name].astype(self.dtype).numpy() for name in self.final_outputs}
