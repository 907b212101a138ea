"""Training parity: the same numpy init, batches and schedule give the same losses and weights in every backend.

Also the pieces the parity rests on: paddle's AdamW kernel is torch's formula, the schedule and the
no-decay rule are transformers', accumulation equals the large batch.
"""
from __future__ import annotations

import numpy as np
import pytest

from tasks.train.loop import batch_order
from tasks.train.optim import decays, linear_lr, warmup_steps

from ..conftest import BACKENDS
from .test_train_support import one_thread  # noqa: F401  (fixture)
from .test_train_support import (losses, lstm_biases_summed, make_runner, make_trainer, max_weight_diff, seeded_data,
                                 tiny_config)

pytestmark = pytest.mark.usefixtures("one_thread")

# 20 AdamW updates of 2 accumulated micro-batches, warmup then decay, clipping and weight decay active
SETTINGS = dict(max_steps=20, batch_size=4, grad_accum=2, warmup_ratio=0.2, weight_decay=0.01, max_grad_norm=0.5)
# Funnel trains 1, 1 and 2 layers per block (its tiny preset has 2, 2, 2): a block that does not pool, two that do,
# and a layer after the pooling one in its block are every path of the encoder at two thirds of its layers, which
# are what Funnel's cases spend their time on (each layer's function and gradients: tests/backends/test_funnel.py)
TRAIN_SHAPES = {"funnel": dict(block_sizes=[1, 1, 2])}


@pytest.mark.parametrize("family_name,head,dtype,learning_rate,tolerance", [
    ("bert", "seqcls", "float64", 1e-3, 1e-8),
    # dropout on: the masks are shared (backends/_fw/dropout.py), so the backends still compute one function
    ("bert-dropout", "seqcls", "float64", 1e-3, 1e-8),
    ("bert-dropout", "seqcls", "float32", 1e-3, 1e-4),
    ("funnel-dropout", "seqcls", "float64", 1e-3, 1e-8),
    ("roberta-dropout", "seqcls", "float64", 1e-3, 1e-8),
    ("tinybert-dropout", "seqcls", "float64", 1e-3, 1e-8),
    ("bilstm-dropout", "seqcls", "float64", 1e-3, 1e-8),
    ("bert", "seqcls", "float32", 1e-3, 1e-4),
    ("funnel", "seqcls", "float64", 1e-3, 1e-8),
    # float32 at lr 1e-4: Funnel's key biases have an exactly-zero gradient, so theirs is float32 rounding noise,
    # which Adam turns into steps of up to lr in every framework (torch float32 vs torch float64 alike)
    ("funnel", "seqcls", "float32", 1e-4, 1e-4),
    ("bert", "qa", "float64", 1e-3, 1e-8),
    ("bert", "mc", "float64", 1e-3, 1e-8),
])
def test_training_parity(family_name, head, dtype, learning_rate, tolerance, tmp_path):
    family_name, dropout = family_name.split("-")[0], family_name.endswith("-dropout")
    assert_same_training(family_name, tiny_config(family_name, dropout, **TRAIN_SHAPES.get(family_name, {})), head,
                         dtype, learning_rate, tolerance, tmp_path)


def test_bilstm_pair_training_parity(tmp_path):
    """Tang et al.'s two-tower student (input_ids_b, attention_mask_b too), dropout on with shared masks."""
    assert_same_training("bilstm", tiny_config("bilstm", dropout=True, pair=True), "seqcls", "float64", 1e-3, 1e-8,
                         tmp_path, seq_len=6, max_steps=6)  # short: the TF LSTM steps in Python


@pytest.mark.parametrize("base,head", [("bert", "qa"), ("roberta", "seqcls")])  # mc: float64 port parity
def test_deformer_training_parity(base, head, tmp_path):
    """DeFormer split 1/1/1 (question-only, assist and joint layers), ragged questions and passages, dropout on
    with shared masks."""
    from backends.deformer.config import from_base_config
    from backends.deformer.weights import BASE_WEIGHTS

    body = tiny_config(base, dropout=True).replace(num_hidden_layers=3)
    assert BASE_WEIGHTS[base].config_class is type(body)
    config = from_base_config(body, 1, 1, 1, max_question_length=8)
    assert_same_training("deformer", config, head, "float64", 1e-3, 1e-8, tmp_path)


def test_deformer_mc_training_parity(tmp_path):
    """The DeFormer's multiple-choice head (the choices axis on both parts), split 0/2/1 on RoBERTa's shape,
    20 AdamW updates of one micro-batch each (the TF port runs eagerly and slowly)."""
    config = tiny_config("deformer", False, "deformer-roberta-large-0-12-12", num_hidden_layers=3, encoder2_layers=0,
                         assist_layers=2, encoder3_layers=1)
    assert_same_training("deformer", config, "mc", "float64", 1e-3, 1e-8, tmp_path, grad_accum=1)


def assert_same_training(family_name, config, head, dtype, learning_rate, tolerance, tmp_path, seq_len=12,
                         params=None, trainable=None, **changes):
    """Every backend trains the same losses and weights from the same init (or `params`), batches and schedule
    (SETTINGS with `changes`), training all parameters or the `trainable` names; returns the reference's
    (initial, trained) weights."""
    settings = {**SETTINGS, **changes}
    data = seeded_data(family_name, config, head, rows=24 if head != "mc" else 16, seq_len=seq_len)
    runs = {}
    for backend in BACKENDS:
        runner = make_runner(backend, family_name, config, head, dtype, params=params, trainable=trainable)
        trainer = make_trainer(runner, data, tmp_path / backend, learning_rate=learning_rate, **settings)
        trainer.train()
        runs[backend] = (losses(trainer), lstm_biases_summed(trainer.runner.get_params()))
    reference, (ref_losses, ref_params) = BACKENDS[0], runs[BACKENDS[0]]
    assert len(ref_losses) == settings["max_steps"] and np.all(np.isfinite(ref_losses))
    initial = lstm_biases_summed(make_runner(reference, family_name, config, head, dtype, params=params).get_params())
    assert max_weight_diff(ref_params, initial) > 5 * tolerance  # training moved the weights
    for backend in BACKENDS[1:]:
        step_losses, trained = runs[backend]
        assert np.max(np.abs(step_losses - ref_losses)) <= tolerance, backend
        assert max_weight_diff(trained, ref_params) <= tolerance, backend
    return initial, ref_params


@pytest.mark.skipif("paddle" not in BACKENDS or "torch" not in BACKENDS, reason="needs torch and paddle")
def test_paddle_adamw_kernel_is_torch_formula():
    """paddle's AdamW docstring writes lr_t * (m / (sqrt(v) + eps) + wd * p); its kernel computes torch's update."""
    import paddle
    import torch

    rng = np.random.default_rng(0)
    start, grads, rates = rng.normal(size=5), [rng.normal(size=5) * 1e-3 for _ in range(4)], [0.1, 0.05, 0.2, 0.1]
    b1, b2, eps, wd = 0.9, 0.999, 1e-3, 0.5  # a large eps and decay make a misplaced term visible

    expected, m, v = start.copy(), np.zeros(5), np.zeros(5)
    for t, (g, lr) in enumerate(zip(grads, rates), start=1):
        expected *= 1 - lr * wd
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        expected -= lr / (1 - b1 ** t) * m / (np.sqrt(v) / np.sqrt(1 - b2 ** t) + eps)

    torch_param = torch.nn.Parameter(torch.tensor(start))
    torch_opt = torch.optim.AdamW([torch_param], lr=0.0, betas=(b1, b2), eps=eps, weight_decay=wd)
    paddle_param = paddle.create_parameter([5], "float64")
    paddle_param.set_value(start)
    paddle_opt = paddle.optimizer.AdamW(0.0, b1, b2, eps, parameters=[paddle_param], weight_decay=wd)
    for g, lr in zip(grads, rates):
        torch_param.grad = torch.tensor(g)
        torch_opt.param_groups[0]["lr"] = lr
        torch_opt.step()
        (paddle_param * paddle.to_tensor(g)).sum().backward()
        paddle_opt.set_lr(lr)
        paddle_opt.step()
        paddle_opt.clear_grad()
    np.testing.assert_allclose(torch_param.detach().numpy(), expected, rtol=0, atol=1e-14)
    np.testing.assert_allclose(paddle_param.numpy(), expected, rtol=0, atol=1e-14)


@pytest.mark.skipif("torch" not in BACKENDS, reason="needs torch")
def test_linear_schedule_is_transformers():
    import torch
    from transformers import get_linear_schedule_with_warmup

    total, warmup = 37, warmup_steps(37, 0.1)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=3e-5)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup, total)
    for step in range(total):
        assert linear_lr(step, 3e-5, total, warmup) == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-12)
        optimizer.step()
        scheduler.step()
    assert warmup == 4  # ceil(3.7), as TrainingArguments.get_warmup_steps


@pytest.mark.skipif("torch" not in BACKENDS, reason="needs torch")
def test_no_decay_names_are_transformers_trainers():
    """The canonical-name rule gives the parameter sets transformers' Trainer decays on its BERT."""
    from transformers import BertConfig, BertForSequenceClassification, Trainer

    model = BertForSequenceClassification(BertConfig(vocab_size=32, hidden_size=8, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=16))
    names = [name for name, _ in model.named_parameters()]
    assert {n for n in names if decays(n)} == set(Trainer.get_decay_parameter_names(None, model))


def test_batch_order_is_seeded_per_epoch_and_backend_free():
    first = batch_order(10, 4, seed=3, epoch=0)
    assert [len(b) for b in first] == [4, 4, 2] and sorted(np.concatenate(first)) == list(range(10))
    assert all((a == b).all() for a, b in zip(first, batch_order(10, 4, seed=3, epoch=0)))
    assert not (np.concatenate(first) == np.concatenate(batch_order(10, 4, seed=3, epoch=1))).all()
    # a batch of 8 holds the examples of two accumulated batches of 4
    assert (batch_order(10, 8, 3, 0)[0] == np.concatenate(first[:2])).all()


def test_accumulated_micro_batches_equal_one_large_batch(tmp_path):
    config = tiny_config("bert")
    data = seeded_data("bert", config, "seqcls", rows=16)
    results = []
    for batch_size, grad_accum in ((8, 1), (4, 2), (2, 4)):
        trainer = make_trainer(make_runner(BACKENDS[0], "bert", config, "seqcls", "float64"), data, tmp_path,
                               epochs=2, batch_size=batch_size, grad_accum=grad_accum, learning_rate=1e-3)
        trainer.train()
        results.append((losses(trainer), trainer.runner.get_params()))
    for step_losses, params in results[1:]:
        np.testing.assert_allclose(step_losses, results[0][0], rtol=0, atol=1e-12)
        assert max_weight_diff(params, results[0][1]) <= 1e-12
