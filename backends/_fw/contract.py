"""The framework contract: what the ports, the build/run code and the training code call on a framework.

`Adapter` is the module `backends/_fw/<key>/__init__.py` (`backends.framework(key)`), `TrainOps` and
`Runner` are found in `backends/_fw/<key>/train.py` (`tasks.train.step_module(key)`, its `Runner`).
tests/backends/test_framework_contract.py checks every registered framework against these members and
against the torch adapter's values.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, ContextManager, Mapping, Protocol

import numpy as np

Tensor = Any  # a framework tensor
Model = Any  # a port's model (torch.nn.Module, paddle.nn.Layer, nn.Layer of backends/_fw/tf/nn.py)


class Adapter(Protocol):
    """backends/_fw/<key>/__init__.py, as a module."""

    def set_default_dtype(self, name: str) -> None:
        """Dtype ("float32" or "float64") that new parameters and tensors get."""

    def seed(self, n: int) -> None:
        """Seed the framework's global random generator."""

    def deterministic(self) -> None:
        """Make the framework's kernels deterministic."""

    def no_tf32(self) -> None:
        """Turn TensorFloat-32 matrix products and convolutions off (parity runs: on an Ampere or later GPU a
        float32 product may otherwise round its inputs to 10 mantissa bits)."""

    def on_device(self, device: str) -> ContextManager:
        """A context in which the models built and the tensors made (from_numpy) live on `device` ("cpu" or
        "gpu")."""

    def to_numpy(self, t: Tensor) -> np.ndarray:
        """A tensor (or parameter) as a numpy array of its dtype, detached."""

    def from_numpy(self, a: np.ndarray, dtype: str | None = None, device=None) -> Tensor:
        """A tensor holding a's values, in `dtype` if given, on `device` if given."""

    def named_parameters(self, model: Model) -> dict:
        """Parameter name (attribute path, as torch names it) -> parameter, in the port's own layout."""

    def shape(self, param: Tensor) -> tuple:
        """A parameter's shape as a tuple of ints."""

    def assign(self, param: Tensor, array: np.ndarray) -> None:
        """Overwrite a parameter with an array of its shape (cast to the parameter's dtype)."""

    def value_and_grads(self, model: Model, fn: Callable[[], tuple]) -> tuple:
        """Run fn() -> (loss, outputs, watched); return loss, outputs, gradients by parameter name, gradients
        of the watched tensors by name."""

    def dot(self, tensor: Tensor, array: np.ndarray) -> Tensor:
        """sum(tensor * array): a fixed scalar function of an output (the parity loss)."""

    def no_grad(self) -> ContextManager:
        """Context in which forward passes record nothing for gradients."""

    def final_outputs_only(self) -> ContextManager:
        """Context for eval-mode passes whose caller reads only the final outputs (Runner.predict, serving): the
        framework's fused inference kernels where it has them (torch: attention without its probabilities;
        paddle: fused layer_norm below float64; tf: none)."""

    def activation(self, name: str) -> Callable[[Tensor], Tensor]:
        """The function of a hidden_act name (one of backends._fw.ACTIVATIONS)."""

    def in_float64(self, fn: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
        """fn evaluated in float64 and rounded back to the input's dtype."""

    def tanh(self, x: Tensor) -> Tensor:
        """tanh as accurate as torch's in float32 (the ports' tanh layers and LSTM gates)."""

    def sigmoid(self, x: Tensor) -> Tensor:
        """sigmoid as accurate as torch's in float32 (the LSTM gates)."""


class TrainOps(Protocol):
    """The op set of backends/_fw/<key>/train.py that tasks/train/losses.py and tasks/distill.py call."""

    def cross_entropy(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Mean cross-entropy of integer labels over the last axis."""

    def masked_cross_entropy(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Mean cross-entropy of integer labels over the last axis at the positions whose label is not -100
        (masked-LM labels: logits [..., vocab], labels [...]); 0 when every label is -100."""

    def mse(self, a: Tensor, b: Tensor) -> Tensor:
        """Mean squared difference, both flattened (b cast to a's dtype)."""

    def log_softmax(self, x: Tensor) -> Tensor:
        """log_softmax over the last axis."""

    def softmax(self, x: Tensor) -> Tensor:
        """softmax over the last axis."""

    def sum_last(self, x: Tensor) -> Tensor:
        """Sum over the last axis."""

    def mean(self, x: Tensor) -> Tensor:
        """Mean of every entry."""

    def zero_where_below(self, x: Tensor, threshold: float) -> Tensor:
        """x with the entries <= threshold set to 0 (TinyBERT's masked attention scores)."""


class Runner(Protocol):
    """backends/_fw/<key>/train.py's Runner: one model of a family and head, its AdamW, the driver's steps."""

    model: Model  # the port's model
    params: dict  # parameter name -> parameter
    trainable: frozenset  # the names of the parameters it trains (all unless some are frozen)
    head: str
    # FamilySpec.padding_trimmer(config, head): predict_all cuts each batch with it (None: batches keep their width;
    # a compiled TF pass rounds the cut up to a multiple of positions, one trace per width)
    trim_padding: Callable[[dict], dict] | None
    # FamilySpec.training_trimmer(config, head): the driver cuts each training micro-batch with it (None: it does not)
    trim_training: Callable[[dict], dict] | None

    def __init__(self, family: str, config, head: str, params: Mapping[str, np.ndarray] | None = None,
                 dtype: str = "float32", device: str = "cpu", bf16: bool = False, seed: int = 0,
                 dropout_masks: str = "shared", trainable=None, fp16: bool = False) -> None:
        """Build the model (params: canonical arrays, or the family's init) and swap in shared dropout.
        `trainable`: the canonical names to train (None: all); the others are frozen (backends/_fw/freezing.py).
        bf16/fp16: autocast where backends/_fw/amp.py says the framework has it (fp16 with a loss scaler); an
        AutocastError otherwise."""

    def to_tensors(self, batch: dict) -> dict:
        """numpy arrays -> tensors on the device (floats in the model dtype); other values pass through."""

    def forward(self, tensors: dict, train: bool) -> dict:
        """The model's outputs on the model inputs among `tensors`, in train or eval mode."""

    def seed(self, n: int, rows=None) -> None:
        """Seed dropout (the driver reseeds every micro-batch, so a resumed run draws the same masks); `rows`: the
        positions in the micro-batch of the examples this process holds (data-parallel; None: all of them)."""

    def set_optimizer(self, settings) -> None:
        """torch's AdamW with `settings` (tasks/train/optim.py AdamWSettings); no decay for settings.no_decay."""

    def forward_backward(self, batch: dict, loss_fn, scale: float = 1.0) -> float:
        """Add the gradients of scale * loss_fn(ops, outputs, batch) to the accumulated ones; return the loss."""

    def optimizer_step(self, lr: float, max_grad_norm: float) -> float | None:
        """Clip to max_grad_norm (global norm; <= 0: none), one AdamW update at lr, clear the gradients;
        return the norm before clipping; None when the fp16 loss scaler skipped the update (overflow)."""

    def get_params(self) -> dict:
        """The parameters as canonical-layout numpy arrays."""

    def set_params(self, params: Mapping[str, np.ndarray]) -> None:
        """Load canonical-layout arrays (a checkpoint's)."""

    def optimizer_state(self) -> dict:
        """"exp_avg.<name>", "exp_avg_sq.<name>" (canonical layout) and "step.<name>" of every stepped
        parameter (a framework may add its own keys)."""

    def set_optimizer_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore optimizer_state()'s arrays, from this framework or another."""

    def outputs(self, batch: dict) -> dict:
        """Eval-mode outputs as tensors, recording no gradients (a distillation teacher's)."""

    def predict(self, batch: dict) -> dict:
        """The head's final outputs (logits, or start/end logits) as numpy, in eval mode."""


def members(protocol: type) -> dict[str, inspect.Signature]:
    """name -> signature (without self) of every method a protocol declares."""
    found = {}
    for name, value in vars(protocol).items():
        if inspect.isfunction(value) and (not name.startswith("_") or name == "__init__"):
            signature = inspect.signature(value)
            found[name] = signature.replace(parameters=list(signature.parameters.values())[1:])
    return found


def attributes(protocol: type) -> tuple[str, ...]:
    """The data attributes a protocol declares."""
    return tuple(protocol.__annotations__)
