"""One backend's run: load weights and inputs, forward and backward, named outputs and gradients.

`run_backend` does the work in-process; `python -m parity.worker JOB.json` runs it in a fresh
process (the harness runs each backend in its own process) and writes the results to safetensors.
"""
from __future__ import annotations

import json
import os
import sys
import time
import zlib

_clock = time.perf_counter()  # a backend's own time includes starting its framework (first job)

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
                backward: bool = True, seed: int = 0) -> dict:
    """Outputs ("loss", final outputs, hidden states...) and, with backward, "grad.<param>" and
    "grad.inputs_embeds", all as numpy arrays in canonical names and layouts."""
    from backends import family, framework
    from backends.build import build_model, canonical_grads

    spec = family(family_name)
    adapter = framework(fw)
    adapter.deterministic()
    adapter.seed(seed)
    model = build_model(family_name, fw, config, head, params, dtype=dtype)
    missing = [name for name in spec.input_names(config, head) if name not in inputs]
    if missing:
        raise KeyError(f"{family_name} {head}: inputs lack {', '.join(missing)}")
    tensors = {name: adapter.from_numpy(inputs[name]) for name in spec.input_names(config, head)}  # declared ones
    final = spec.final_outputs[head]

    def forward():
        embeds = model.get_input_embeddings()(tensors["input_ids"])
        outputs = model(**tensors, inputs_embeds=embeds)
        loss = sum(adapter.dot(outputs[name], projection(name, tuple(outputs[name].shape), seed).astype(dtype))
                   for name in final)
        return loss, outputs, {INPUT_EMBEDS: embeds}

    if backward:
        loss, outputs, grads, watched = adapter.value_and_grads(model, forward)
        grads = {**canonical_grads(grads, family_name, fw), INPUT_EMBEDS: adapter.to_numpy(watched[INPUT_EMBEDS])}
    else:
        with adapter.no_grad():
            loss, outputs, _ = forward()
        grads = {}
    results = {"loss": np.asarray(adapter.to_numpy(loss)).reshape(())}
    results.update({name: adapter.to_numpy(t) for name, t in flatten_outputs(outputs).items()})
    results.update({GRAD_PREFIX + name: g for name, g in grads.items()})
    return results


def main(job_path: str) -> int:
    """Run the jobs listed in a JSON file {"jobs": [...]} one after the other (see `execute`)."""
    for job in json.loads(open(job_path).read())["jobs"]:
        execute(job)
    return 0


def execute(job: dict) -> None:
    """Run a job {family, backend, config, head, weights, inputs, dtype, backward, seed, output}; write
    its results to `output` (safetensors) and its timing and peak memory to `output`.json.

    The timing is the backend's own work: starting its framework (first job of a process), loading
    the weights, forward and backward; writing the results is the harness's cost."""
    global _clock

    from backends import family
    from backends.tensorfile import SafetensorsReader, save_arrays

    from .oracles import RUNNERS

    spec = family(job["family"])
    config = spec.config_class.from_dict(job["config"])
    oracle = RUNNERS.get(job["backend"])
    params = SafetensorsReader(job["weights"])
    inputs = dict(SafetensorsReader(job["inputs"]))
    if oracle is not None:
        results = oracle(job["family"], config, job["head"], params, inputs, job["dtype"])
    else:
        results = run_backend(job["family"], job["backend"], config, job["head"], params, inputs, job["dtype"],
                              backward=job["backward"], seed=job["seed"])
    elapsed = time.perf_counter() - _clock
    save_arrays(job["output"], results, metadata={"backend": job["backend"], "dtype": job["dtype"]})
    with open(job["output"] + ".json", "w") as out:
        json.dump({"seconds": elapsed, "max_rss_bytes": _max_rss()}, out)
    _clock = time.perf_counter()


def _max_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


if __name__ == "__main__":
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    sys.exit(main(sys.argv[1]))
