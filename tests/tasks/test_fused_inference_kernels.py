"""The fused inference kernels of passes that read only the final outputs (Runner.predict, serving;
backends/_fw/<fw>.final_outputs_only): torch's fused attention is the same function as the unfused attention every
other pass runs, padded keys masked, and never used where probabilities are read or where attention dropout is live;
paddle's fused layer_norm runs below float64 only, within float32 rounding of the explicit form. Paddle's view ops
run dense kernels in every Runner pass, training steps included, bit for bit the strided passes' results."""
from __future__ import annotations

import numpy as np
import pytest

from backends import family
from tasks.train import runner_class

from .test_train_support import seeded_data, tiny_config

CASES = [("bert", "seqcls"), ("roberta", "qa"), ("tinybert", "mc"), ("deformer", "qa")]


def runner_and_batch(family_name: str, head: str, backend: str = "torch", dtype: str = "float64"):
    config = tiny_config(family_name, dropout=True)
    rng = np.random.default_rng(3)
    params = family(family_name).init_params(config, head, rng)
    batch = seeded_data(family_name, config, head, rows=4, seq_len=11)
    masks = [name for name in batch if "attention_mask" in name or name.endswith("_mask")]
    for name in masks:  # ragged padding in every mask the family reads
        batch[name][1, -4:] = 0
        batch[name][3, -2:] = 0
    return runner_class(backend)(family_name, config, head, params, dtype=dtype), batch


@pytest.mark.parametrize("family_name,head", CASES, ids=[f"{f}-{h}" for f, h in CASES])
def test_predict_equals_the_unfused_outputs(family_name, head):
    pytest.importorskip("torch")
    runner, batch = runner_and_batch(family_name, head)
    fused = runner.predict(batch)
    unfused = runner.outputs(batch)  # eval mode, probabilities materialised
    assert unfused["attentions"][0] is not None
    for name, value in fused.items():
        np.testing.assert_allclose(value, unfused[name].numpy(), rtol=0, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("family_name,head", CASES[:1] + CASES[-1:], ids=["bert-seqcls", "deformer-qa"])
def test_the_fused_kernel_runs_only_where_nothing_reads_the_probabilities(family_name, head):
    pytest.importorskip("torch")
    from backends._fw.torch import without_attention_weights

    runner, batch = runner_and_batch(family_name, head)
    tensors = runner.to_tensors(batch)
    with without_attention_weights():
        assert all(probs is None for probs in runner.forward(tensors, train=False)["attentions"])
        # training with attention dropout: the dropout multiplies the probabilities, so they are materialised
        assert all(probs is not None for probs in runner.forward(tensors, train=True)["attentions"])
    assert all(probs is not None for probs in runner.forward(tensors, train=False)["attentions"])


@pytest.fixture
def paddle_layer_norm_calls(monkeypatch):
    """Counts the calls of paddle's fused layer_norm op (the explicit form never calls it)."""
    pytest.importorskip("paddle")
    import paddle.nn.functional as F

    calls = []
    fused = F.layer_norm

    def counted(*args, **kwargs):
        calls.append(args[0].dtype)
        return fused(*args, **kwargs)
    monkeypatch.setattr(F, "layer_norm", counted)
    return calls


@pytest.mark.parametrize("family_name,head", CASES, ids=[f"{f}-{h}" for f, h in CASES])
def test_paddle_predict_runs_the_fused_layer_norm_below_float64(paddle_layer_norm_calls, family_name, head):
    runner, batch = runner_and_batch(family_name, head, backend="paddle", dtype="float32")
    explicit = runner.outputs(batch)  # eval mode, the explicit form
    assert paddle_layer_norm_calls == []
    fused = runner.predict(batch)
    assert paddle_layer_norm_calls  # every LayerNorm of the pass
    for name, value in fused.items():  # float32 rounding of the same function (tiny logits: |x| < 10)
        np.testing.assert_allclose(value, explicit[name].numpy(), rtol=0, atol=2e-6, err_msg=name)


@pytest.mark.parametrize("family_name,head", CASES[:1] + CASES[-1:], ids=["bert-seqcls", "deformer-qa"])
def test_paddle_keeps_the_explicit_layer_norm_in_float64_and_in_training(paddle_layer_norm_calls, family_name, head):
    runner, batch = runner_and_batch(family_name, head, backend="paddle", dtype="float64")
    predicted = runner.predict(batch)
    assert paddle_layer_norm_calls == []  # float64: paddle's op would hold epsilon as a float32
    explicit = runner.outputs(batch)
    for name, value in predicted.items():
        np.testing.assert_array_equal(value, explicit[name].numpy(), err_msg=name)
    runner32, batch = runner_and_batch(family_name, head, backend="paddle", dtype="float32")
    runner32.forward(runner32.to_tensors(batch), train=True)
    assert paddle_layer_norm_calls == []  # training: the explicit form (its rounding follows torch's)


def strided_views() -> bool:
    import paddle

    from backends._fw.paddle import STRIDED_VIEWS

    return paddle.get_flags([STRIDED_VIEWS])[STRIDED_VIEWS]


@pytest.mark.parametrize("family_name,head", CASES, ids=[f"{f}-{h}" for f, h in CASES])
def test_paddle_predict_runs_view_ops_on_dense_kernels_with_the_same_outputs(monkeypatch, family_name, head):
    """Runner.predict (and Runner.outputs) turn paddle's strided views off for their pass only; the outputs are those
    of the same pass on strided views, bit for bit (the same data reaches every kernel, in another memory layout on
    the way)."""
    paddle = pytest.importorskip("paddle")
    from backends._fw.paddle import fused_layer_norm

    runner, batch = runner_and_batch(family_name, head, backend="paddle", dtype="float32")
    assert strided_views()  # paddle's default
    flags, forward = [], runner.forward

    def recorded(*args, **kwargs):
        flags.append(strided_views())
        return forward(*args, **kwargs)
    monkeypatch.setattr(runner, "forward", recorded)
    dense = runner.predict(batch)
    assert flags == [False] and strided_views()  # off within the pass, restored after it
    with paddle.no_grad(), fused_layer_norm():  # the same LayerNorm kernel as predict's
        strided = runner.forward(runner.to_tensors(batch), train=False)
    assert flags == [False, True]
    runner.outputs(batch)  # a distillation teacher's pass too
    assert flags == [False, True, False] and strided_views()
    for name, value in dense.items():
        np.testing.assert_array_equal(value, strided[name].numpy(), err_msg=name)


def test_paddle_dense_kernels_restore_strided_views_after_an_error():
    pytest.importorskip("paddle")
    from backends._fw.paddle import dense_kernels

    with pytest.raises(RuntimeError), dense_kernels():
        assert not strided_views()
        raise RuntimeError("a failing pass")
    assert strided_views()


@pytest.mark.parametrize("family_name,head", CASES, ids=[f"{f}-{h}" for f, h in CASES])
def test_paddle_training_step_runs_view_ops_on_dense_kernels_with_the_same_gradients(monkeypatch, family_name, head):
    """Runner.forward_backward turns paddle's strided views off for its forward and backward; loss and gradients
    are those of the same step on strided views, bit for bit (dropout live, the same shared masks)."""
    pytest.importorskip("paddle")
    import contextlib

    from backends._fw.paddle import train as paddle_train
    from tasks.train.losses import classification, span

    loss_fn = span if head == "qa" else classification
    flags = []

    def recorded(ops, outputs, batch):
        flags.append(strided_views())
        return loss_fn(ops, outputs, batch)

    def step():
        runner, batch = runner_and_batch(family_name, head, backend="paddle", dtype="float32")
        runner.seed(5)
        loss = runner.forward_backward(batch, recorded)
        return loss, {name: p.grad.numpy() for name, p in runner.params.items() if p.grad is not None}

    dense_loss, dense = step()
    assert flags == [False] and strided_views()  # off within the step, restored after it
    monkeypatch.setattr(paddle_train, "dense_kernels", contextlib.nullcontext)
    strided_loss, strided = step()
    assert flags == [False, True]
    assert dense_loss == strided_loss and dense.keys() == strided.keys() and len(dense) > 10
    for name, value in dense.items():
        np.testing.assert_array_equal(value, strided[name], err_msg=name)
