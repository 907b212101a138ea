"""Which framework autocasts where (--bf16, --fp16), checked before any framework is imported.

torch: torch.autocast on CPU and GPU (bfloat16 and float16; CPU autocast exists since torch 2.x), float16 with
torch.amp.GradScaler. paddle: paddle.amp.auto_cast (level O1) and paddle.amp.GradScaler, which act on GPU only
(on CPU paddle warns "amp_guard can only be enabled on CUDAPlace ..." and computes in float32: refused here
rather than silently ignored). tf: none; its ports are tf.Module layers (backends/_fw/tf/nn.py) that compute in
their variables' dtype, and Keras' mixed_precision policy (with its LossScaleOptimizer) only reaches Keras
layers, so a tf autocast would mean casting in every port.
"""
from __future__ import annotations

import numpy as np

from backends.errors import BadInput

# framework -> the devices on which its autocast (and loss scaler) computes in bfloat16/float16
AUTOCAST_DEVICES = {"torch": ("cpu", "gpu"), "paddle": ("gpu",), "tf": ()}
WHY_NOT = {
    "paddle": "paddle.amp's auto_cast and GradScaler act only on GPU (on CPU they compute in float32): "
              "add --device gpu or use --backend torch",
    "tf": "the tf ports compute in their variables' dtype (no autocast; Keras' mixed_precision reaches Keras "
          "layers only): use --backend torch or paddle",
}


# the fp16 loss scaler's state in a checkpoint's optimizer file (tasks/train/loop.py OPTIMIZER_FILE), so that a
# resumed run continues with the scale the interrupted one had reached: the scale and the updates since it changed
LOSS_SCALE, CLEAN_UPDATES = "loss_scaler.scale", "loss_scaler.clean_updates"


def loss_scaler_state(scale: float, clean_updates: int) -> dict:
    """The arrays a Runner with a loss scaler adds to its optimizer_state()."""
    return {LOSS_SCALE: np.asarray(scale, dtype=np.float64), CLEAN_UPDATES: np.asarray(clean_updates, dtype=np.int64)}


class AutocastError(BadInput, ValueError):
    """An autocast option the framework, device or dtype cannot honour."""


def check_autocast(framework: str, device: str, dtype: str, bf16: bool = False, fp16: bool = False) -> None:
    """AutocastError (one line naming the options) unless `framework` autocasts on `device` as asked."""
    if bf16 and fp16:
        raise AutocastError("--bf16 and --fp16 exclude each other: give one")
    option = "--bf16" if bf16 else "--fp16" if fp16 else None
    if option is None:
        return
    if dtype != "float32":
        raise AutocastError(f"{option} autocasts a float32 model; --dtype {dtype} is for exact runs: drop one of them")
    if device not in AUTOCAST_DEVICES.get(framework, ()):
        raise AutocastError(f"{option} with --backend {framework} --device {device}: {WHY_NOT[framework]}")
