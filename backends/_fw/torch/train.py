"""PyTorch step module: a Runner (model, torch.optim.AdamW, clipping, state by canonical name) and the op set.

backends/_fw/paddle/train.py and backends/_fw/tf/train.py mirror this module function by function and
method by method; their comments mark each real framework difference. The framework-free driver is
tasks/train/loop.py.
"""
from __future__ import annotations

import contextlib
import math
import sys

import numpy as np
import torch
import torch.nn.functional as F

from backends import family as get_family
from backends.build import build_model, export_params, load_params
from . import final_outputs_only
from ..amp import CLEAN_UPDATES, LOSS_SCALE, check_autocast, loss_scaler_state
from ..dropout import mask_stream, native_seed, share_dropout
from ..freezing import trainable_names

# ---- the op set (contract.TrainOps) the framework-free losses (tasks/train/losses.py, tasks/distill.py) call


def cross_entropy(logits, labels):
    """Mean cross-entropy of integer labels over the last axis."""
    return F.cross_entropy(logits, labels)


def masked_cross_entropy(logits, labels):
    """Mean cross-entropy over the positions whose label is not -100 (masked-LM labels); 0 when there are none."""
    labels = labels.reshape(-1)
    total = F.cross_entropy(logits.reshape(labels.shape[0], -1), labels, ignore_index=-100, reduction="sum")
    return total / (labels != -100).sum().clamp(min=1).to(total.dtype)


def mse(a, b):
    """Mean squared difference, both flattened (b cast to a's dtype)."""
    return F.mse_loss(a.reshape(-1), b.reshape(-1).to(a.dtype))


def log_softmax(x):
    return F.log_softmax(x, dim=-1)


def softmax(x):
    return F.softmax(x, dim=-1)


def sum_last(x):
    return x.sum(-1)


def mean(x):
    return x.mean()


def zero_where_below(x, threshold: float):
    """x with the entries <= threshold set to 0 (TinyBERT's masked attention scores)."""
    return torch.where(x <= threshold, torch.zeros_like(x), x)


OPS = sys.modules[__name__]


class MaskOps:
    """The tensor ops of the dropout masks (backends/_fw/dropout.py NumpyOps' members) on the model's device."""

    def __init__(self, device):
        self.device = device

    def constant(self, array):
        # pinned host memory and non_blocking: the copy is queued behind the running kernels instead of waiting
        tensor = torch.from_numpy(array)
        if self.device.type == "cuda":
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor

    def arange(self, n: int):
        return torch.arange(n, dtype=torch.int64, device=self.device)

    xor = staticmethod(torch.bitwise_xor)
    reshape = staticmethod(torch.reshape)

    def scaled(self, keep, scale: float, float64: bool):
        return keep.to(torch.float64 if float64 else torch.float32) * scale


class SharedDropout(torch.nn.Dropout):
    """nn.Dropout whose masks come from a MaskStream or HashStream (backends/_fw/dropout.py), the same in every
    backend."""

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        return x * self.masks.mask(x.shape, self.p, float64=x.dtype == torch.float64).to(x.dtype)


class Runner:
    """One model of a family and head in PyTorch, its AdamW, and the steps the driver calls."""

    def __init__(self, family: str, config, head: str, params=None, dtype: str = "float32", device: str = "cpu",
                 bf16: bool = False, seed: int = 0, dropout_masks: str = "shared", trainable=None, fp16: bool = False):
        self.family, self.head = family, head
        self.device = torch.device("cuda" if device == "gpu" else "cpu")
        self.dtype = getattr(torch, dtype)
        check_autocast("torch", device, dtype, bf16, fp16)
        # autocast runs matrix products in bfloat16/float16 on CPU and GPU (torch 2.x's CPU autocast); float16's
        # narrow range needs a loss scaler: the loss is multiplied up before backward, the gradients divided
        # back, and an update whose gradients overflowed is skipped with a lower scale (torch.amp.GradScaler)
        self.amp_dtype = torch.bfloat16 if bf16 else torch.float16 if fp16 else None
        self.scaler = torch.amp.GradScaler(self.device.type) if fp16 else None
        self.model = build_model(family, "torch", config, head, params, dtype=dtype, seed=seed).to(self.device)
        self.params = dict(self.model.named_parameters())
        self.trainable = trainable_names(self.params, trainable)
        for name, param in self.params.items():  # a frozen parameter computes no gradient
            param.requires_grad_(name in self.trainable)
        self.rules = get_family(family).port_rules["torch"]
        self.final_outputs = get_family(family).prediction_outputs(head)
        self.input_names = get_family(family).input_names(config, head)
        self.trim_padding = get_family(family).padding_trimmer(config, head)  # predict's batches
        self.trim_training = get_family(family).training_trimmer(config, head)  # the driver's micro-batches
        mask_ops = MaskOps(self.device)
        self.masks = mask_stream(dropout_masks, seed, mask_ops)
        if self.masks is not None:
            share_dropout(self.model.named_modules(), torch.nn.Dropout, SharedDropout, self.masks, family, mask_ops)
        self.optimizer = None

    # ---- data and mode ----

    def to_tensors(self, batch: dict) -> dict:
        """numpy arrays -> tensors on the device (floats in the model dtype); other values pass through."""
        def convert(value):
            if not isinstance(value, np.ndarray):
                return value
            tensor = torch.from_numpy(np.ascontiguousarray(value))
            if self.device.type == "cuda":  # from pinned memory the copy runs asynchronously (non_blocking)
                tensor = tensor.pin_memory().to(self.device, non_blocking=True)
            return tensor.to(self.dtype) if tensor.is_floating_point() else tensor
        return {name: convert(value) for name, value in batch.items()}

    def autocast(self):
        """bfloat16 (--bf16) or float16 (--fp16) autocast; a no-op otherwise."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def forward(self, tensors: dict, train: bool):
        self.model.train(train)
        with self.autocast():
            return self.model(**{name: tensors[name] for name in self.input_names if name in tensors})

    def seed(self, n: int, rows=None) -> None:
        """Seed dropout (the driver reseeds every micro-batch, so a resumed run draws the same masks); `rows`: the
        positions in the micro-batch of the examples this process holds (data-parallel; None: all)."""
        if self.masks is not None:
            self.masks.reseed(n, rows)
        else:
            torch.manual_seed(native_seed(n, rows))

    # ---- training ----

    def set_optimizer(self, settings) -> None:
        """torch.optim.AdamW (decoupled decay) over two groups of the trainable parameters: decayed and
        `settings.no_decay` ones (frozen parameters get no optimizer state)."""
        groups = [{"params": [p for n, p in self.params.items()
                              if n in self.trainable and (n in settings.no_decay) == exempt],
                   "weight_decay": 0.0 if exempt else settings.weight_decay} for exempt in (False, True)]
        self.optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=0.0,
                                           betas=(settings.beta1, settings.beta2), eps=settings.eps)

    def forward_backward(self, batch: dict, loss_fn, scale: float = 1.0) -> float:
        """Add the gradients of scale * loss_fn(OPS, outputs, batch) to the accumulated ones; return the loss."""
        tensors = self.to_tensors(batch)
        with self.autocast():  # the loss too, as transformers computes it: autocast runs cross-entropy in float32
            loss = loss_fn(OPS, self.forward(tensors, train=True), tensors)
        scaled = loss * scale
        (scaled if self.scaler is None else self.scaler.scale(scaled)).backward()
        return loss.item()

    def optimizer_step(self, lr: float, max_grad_norm: float) -> float | None:
        """Clip the gradients to max_grad_norm (global norm), apply one AdamW update at `lr`, clear the
        gradients; return the global norm before clipping (max_grad_norm <= 0: no clipping). With a loss scaler
        (--fp16): None when the gradients overflowed, the update skipped and the scale lowered."""
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)  # clipping sees the true gradients
        with_grads = [p for p in self.params.values() if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(with_grads, max_grad_norm if max_grad_norm > 0 else float("inf"))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if self.scaler is None:
            self.optimizer.step()
        else:  # GradScaler.step skips the update when unscale_ found an Inf/NaN gradient; update() lowers the scale
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        norm = norm.item()
        return None if self.scaler is not None and not math.isfinite(norm) else norm

    def discard_gradients(self) -> None:
        """Drop the accumulated gradients without an update (the driver skips a non-finite loss)."""
        self.optimizer.zero_grad(set_to_none=True)

    # ---- state by canonical name ----

    def get_params(self) -> dict:
        return export_params(self.model, self.family, "torch")

    def set_params(self, params) -> None:
        load_params(self.model, params, self.family, "torch", source="checkpoint")

    def optimizer_state(self) -> dict:
        """{"exp_avg.<name>", "exp_avg_sq.<name>" (canonical layout), "step.<name>"} of every stepped parameter."""
        state = {}
        for name, param in self.params.items():
            slots = self.optimizer.state.get(param)
            if slots:
                state[f"step.{name}"] = np.asarray(int(slots["step"].item()), dtype=np.int64)
                for key in ("exp_avg", "exp_avg_sq"):
                    state[f"{key}.{name}"] = self.rules.to_canonical(name, slots[key].detach().cpu().numpy())
        if self.scaler is not None:
            stored = self.scaler.state_dict()
            state.update(loss_scaler_state(stored["scale"], stored["_growth_tracker"]))
        return state

    def set_optimizer_state(self, state) -> None:
        for name, param in self.params.items():
            if f"step.{name}" in state:
                slots = {"step": torch.tensor(float(state[f"step.{name}"]), dtype=torch.get_default_dtype())}
                for key in ("exp_avg", "exp_avg_sq"):
                    array = self.rules.to_target(name, np.asarray(state[f"{key}.{name}"]))[1]
                    slots[key] = torch.from_numpy(np.array(array)).to(self.device, param.dtype)
                self.optimizer.state[param] = slots
        if self.scaler is not None and LOSS_SCALE in state:
            self.scaler.load_state_dict({**self.scaler.state_dict(), "scale": float(state[LOSS_SCALE]),
                                         "_growth_tracker": int(state[CLEAN_UPDATES])})

    # ---- inference ----

    def outputs(self, batch: dict) -> dict:
        """Eval-mode outputs as tensors, without gradients (a distillation teacher's)."""
        with torch.no_grad():
            return self.forward(self.to_tensors(batch), train=False)

    def predict(self, batch: dict) -> dict:
        """The head's final outputs (logits, or start/end logits) as numpy, in eval mode (attention layers on torch's
        fused kernel: nothing reads their probabilities)."""
        with final_outputs_only():
            outputs = self.outputs(batch)
        return {name: outputs[name].to(self.dtype).cpu().numpy() for name in self.final_outputs}
