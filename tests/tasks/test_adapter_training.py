"""Adapter training: a frozen base model computes no gradient, gets no optimizer state and stays bit-identical;
every backend trains the same adapter and head; the CLI's adapter runs, adapter-only folders and bad input."""
from __future__ import annotations

import numpy as np
import pytest

from backends import family

from ..conftest import BACKENDS
from .test_train_support import one_thread  # noqa: F401  (fixture)
from .test_train_support import make_runner, make_trainer, seeded_data, tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


def head_only(family_name: str, config, head: str) -> frozenset:
    """The task head's parameters: what trains when the base model is frozen and no adapter is added."""
    from backends.checkpoints.adapters import head_names

    return frozenset(head_names(family(family_name).param_shapes(config, head), family_name, config))


def computed_gradients(runner) -> set:
    """The canonical names whose gradient the last forward_backward computed (framework by framework)."""
    if hasattr(runner, "grads"):  # tf: the accumulated gradients of the watched variables
        return {names[0] for names, g in zip(runner.names, runner.grads) if g is not None}
    return {name for name, param in runner.params.items() if param.grad is not None}  # torch, paddle


@pytest.mark.parametrize("backend", BACKENDS)
def test_frozen_parameters_get_no_gradient_no_state_and_stay_bit_identical(backend, tmp_path):
    config = tiny_config("bert")
    trainable = head_only("bert", config, "seqcls")
    assert trainable == {"classifier.weight", "classifier.bias"}
    runner = make_runner(backend, "bert", config, "seqcls", "float64", trainable=trainable)
    assert runner.trainable == trainable
    initial = {name: array.copy() for name, array in runner.get_params().items()}  # torch's may be views
    data = seeded_data("bert", config, "seqcls", rows=16)
    trainer = make_trainer(runner, data, tmp_path, max_steps=5, batch_size=4, learning_rate=1e-2, weight_decay=0.1)
    from tasks.train.losses import LOSSES

    runner.forward_backward({k: v[:4] for k, v in data.items()}, LOSSES["classification"])
    assert computed_gradients(runner) == trainable
    runner.discard_gradients()
    trainer.train()
    trained = runner.get_params()
    for name in initial:
        if name in trainable:
            assert not np.array_equal(trained[name], initial[name]), name
        else:  # bit-identical: no update, no weight decay
            assert trained[name].tobytes() == initial[name].tobytes(), name
    state = runner.optimizer_state()
    assert {key.partition(".")[2] for key in state} == trainable


@pytest.mark.parametrize("backend", BACKENDS)
def test_unknown_trainable_name_is_refused(backend):
    with pytest.raises(ValueError, match="does not have: classifier.weights"):
        make_runner(backend, "bert", tiny_config("bert"), "seqcls", "float64", trainable={"classifier.weights"})


def test_head_names_of_each_family():
    assert head_only("funnel", tiny_config("funnel"), "qa") == {"qa_outputs.weight", "qa_outputs.bias"}
    assert head_only("roberta", tiny_config("roberta"), "seqcls") == {
        "classifier.dense.weight", "classifier.dense.bias", "classifier.out_proj.weight", "classifier.out_proj.bias"}
    assert head_only("bert", tiny_config("bert"), "base") == frozenset()  # a bare body has no head


def test_frozen_base_trains_the_same_in_every_backend(tmp_path):
    """20 AdamW updates with the base frozen (the head alone trains), float64: the same in every backend."""
    from .test_train_parity import assert_same_training

    config = tiny_config("bert", dropout=True)
    trainable = head_only("bert", config, "seqcls")
    initial, trained = assert_same_training("bert", config, "seqcls", "float64", 1e-2, 1e-8, tmp_path,
                                            trainable=trainable)
    assert all(trained[name].tobytes() == initial[name].tobytes() for name in initial if name not in trainable)
