"""One backend's run, in this process: build a port holding given weights, run forward and backward of
the fixed parity loss, and return named outputs and canonical-named gradients as numpy arrays.

The parity harness runs it in a worker process per backend (parity/worker.py); the converters' --verify
runs it forward only. It lives below both so that neither imports the other.
"""
from __future__ import annotations

import time
import zlib

import numpy as np

GRAD_PREFIX = "grad."
INPUT_EMBEDS = "inputs_embeds"


def projection(name: str, shape: tuple, seed: int) -> np.ndarray:
    """The fixed random projection of output `name` in the parity loss (the same in every backend)."""
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    return rng.standard_normal(shape)


def flatten_outputs(outputs: dict) -> dict:
    """{"hidden_states": [a, b]} -> {"hidden_states.0": a, "hidden_states.1": b}; other keys unchanged."""
    flat = {}
    for key, value in outputs.items():
        if isinstance(value, (list, tuple)):
            flat.update({f"{key}.{i}": item for i, item in enumerate(value)})
        else:
            flat[key] = value
    return flat


def run_backend(family_name: str, fw: str, config, head: str, params, inputs: dict, dtype: str,
                backward: bool = True, seed: int = 0, device: str = "cpu", timings: dict | None = None) -> dict:
    """Outputs ("loss", final outputs, hidden states...) and, with backward, "grad.<param>" and
    "grad.inputs_embeds" (a model's own `embedded_inputs` names), all as numpy arrays in canonical names and layouts.
    `device` "gpu": the model and its inputs on the framework's GPU (TF32 off, as on every parity run).

    `timings`, when given, receives the seconds of each phase: "load" (building the model with its weights),
    "forward", "backward" (the rest of the framework's value-and-gradients call) and "fetch" (results to numpy)."""
    from backends import framework

    with framework(fw).on_device(device):
        return _run_backend(family_name, fw, config, head, params, inputs, dtype, backward, seed, timings)


def _run_backend(family_name: str, fw: str, config, head: str, params, inputs: dict, dtype: str, backward: bool,
                 seed: int, timings: dict | None) -> dict:
    from backends import family, framework
    from backends.build import build_model, canonical_grads

    clock = time.perf_counter()
    phases = {"load": 0.0, "forward": 0.0, "backward": 0.0, "fetch": 0.0}
    spec = family(family_name)
    adapter = framework(fw)
    adapter.deterministic()
    adapter.no_tf32()  # float32 parity means float32 products, not TF32's 10-bit mantissas
    adapter.seed(seed)
    model = build_model(family_name, fw, config, head, params, dtype=dtype)
    missing = [name for name in spec.input_names(config, head) if name not in inputs]
    if missing:
        raise KeyError(f"{family_name} {head}: inputs lack {', '.join(missing)}")
    tensors = {name: adapter.from_numpy(inputs[name]) for name in spec.input_names(config, head)}  # declared ones
    final = spec.final_outputs[head]

    # input ids -> the forward() argument taking their word embeddings (a model reading two parts apart, such as
    # the DeFormer's question and passage, names its own); the gradients of those embeddings are compared too
    embedded = getattr(model, "embedded_inputs", {"input_ids": INPUT_EMBEDS})

    def forward():
        started = time.perf_counter()
        embeds = {argument: model.get_input_embeddings()(tensors[name]) for name, argument in embedded.items()}
        outputs = model(**tensors, **embeds)
        loss = sum(adapter.dot(outputs[name], projection(name, tuple(outputs[name].shape), seed).astype(dtype))
                   for name in final)
        phases["forward"] = time.perf_counter() - started
        return loss, outputs, embeds

    phases["load"] = time.perf_counter() - clock
    clock = time.perf_counter()
    if backward:
        loss, outputs, grads, watched = adapter.value_and_grads(model, forward)
        phases["backward"] = time.perf_counter() - clock - phases["forward"]
        clock = time.perf_counter()
        grads = {**canonical_grads(grads, family_name, fw),
                 **{argument: adapter.to_numpy(gradient) for argument, gradient in watched.items()}}
    else:
        with adapter.no_grad():
            loss, outputs, _ = forward()
        clock = time.perf_counter()
        grads = {}
    results = {"loss": np.asarray(adapter.to_numpy(loss)).reshape(())}
    results.update({name: adapter.to_numpy(t) for name, t in flatten_outputs(outputs).items()})
    results.update({GRAD_PREFIX + name: g for name, g in grads.items()})
    phases["fetch"] = time.perf_counter() - clock
    if timings is not None:
        timings.update(phases)
    return results
