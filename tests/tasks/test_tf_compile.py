"""The compiled TensorFlow step (`--tf-compile function|xla`, backends/_fw/tf/train.py Runner.set_compile): forward,
loss and gradients in one tf.function (through XLA) train exactly as the eager step and torch's, dropout on with
device masks or off; accumulation and a short last micro-batch (a second trace) included; the modes whose masks a
trace cannot keep exact are refused in one line."""
from __future__ import annotations

import numpy as np
import pytest

from backends.errors import BadInput
from tasks.__main__ import main

from ..conftest import BACKENDS
from .test_train_support import one_thread  # noqa: F401  (fixture)
from .test_train_support import (losses, make_runner, make_trainer, max_weight_diff, seeded_data, tiny_config,
                                 write_glue, write_model_folder)

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif("tf" not in BACKENDS, reason="needs tensorflow")]
# 2 updates of 2 micro-batches of 4 over 6 rows: the second update's micro-batch has 2 rows (a second trace, and a
# weight of 1/3 per micro-batch in the first); warmup, decay, clipping and weight decay active
SETTINGS = dict(max_steps=2, batch_size=4, grad_accum=2, warmup_ratio=0.5, weight_decay=0.01, max_grad_norm=0.5,
                learning_rate=1e-3)


def train(backend, config, dropout_masks, data, folder, compile_mode=None):
    runner = make_runner(backend, "bert", config, "seqcls", "float64", dropout_masks=dropout_masks)
    if compile_mode is not None:
        runner.set_compile(compile_mode)
    trainer = make_trainer(runner, data, folder, **SETTINGS)
    trainer.train()
    return losses(trainer), runner.get_params(), runner.predict(data)["logits"]


@pytest.mark.parametrize("mode, dropout", [("function", True), ("xla", True), ("function", False)])
def test_compiled_step_trains_as_the_eager_one(mode, dropout, tmp_path):
    config = tiny_config("bert", dropout=dropout, num_hidden_layers=1)
    data = seeded_data("bert", config, "seqcls", rows=6)
    masks = "device" if dropout else "shared"  # without dropout no mask is drawn: shared compiles too
    eager = train("tf", config, masks, data, tmp_path / "eager", "eager")
    compiled = train("tf", config, masks, data, tmp_path / mode, mode)
    references = [eager] + ([train("torch", config, masks, data, tmp_path / "torch")] if "torch" in BACKENDS else [])
    initial = make_runner("tf", "bert", config, "seqcls", "float64").get_params()
    assert max_weight_diff(eager[1], initial) > 1e-6  # training moved the weights
    for ref_losses, ref_params, ref_logits in references:
        np.testing.assert_allclose(compiled[0], ref_losses, rtol=0, atol=1e-10)
        assert max_weight_diff(compiled[1], ref_params) <= 1e-8
        np.testing.assert_allclose(compiled[2], ref_logits, rtol=0, atol=1e-8)  # the compiled eval forward


def test_compiled_masks_follow_the_micro_batch_seed():
    """The trace keeps no micro-batch's masks: a compiled step reseeded differently gives another loss, reseeded
    alike the same one, equal to the eager step's."""
    from tasks.train.losses import classification

    config = tiny_config("bert", dropout=True, num_hidden_layers=1)
    data = seeded_data("bert", config, "seqcls", rows=4)
    runner = make_runner("tf", "bert", config, "seqcls", "float64", dropout_masks="device")
    eager_losses = []
    for seed in (3, 4):
        runner.seed(seed)
        eager_losses.append(runner.forward_backward(data, classification))
    runner.set_compile("function")
    compiled_losses = []
    for seed in (3, 4, 3):
        runner.seed(seed)
        compiled_losses.append(runner.forward_backward(data, classification))
    assert runner.compiled_steps[classification].experimental_get_tracing_count() == 1  # the seed is an input
    assert compiled_losses[0] != compiled_losses[1] and compiled_losses[2] == compiled_losses[0]
    np.testing.assert_allclose(compiled_losses[:2], eager_losses, rtol=0, atol=1e-12)


@pytest.mark.parametrize("masks", ["shared", "native"])
def test_compiled_step_refuses_masks_a_trace_would_freeze(masks):
    config = tiny_config("bert", dropout=True, num_hidden_layers=1)
    runner = make_runner("tf", "bert", config, "seqcls", "float64", dropout_masks=masks)
    with pytest.raises(BadInput, match=f"--tf-compile function with --dropout-masks {masks}: .*--dropout-masks device"):
        runner.set_compile("function")
    runner.set_compile("xla", train=False)  # eval-mode passes drop nothing: they compile with any masks
    assert (runner.step_mode, runner.eval_mode) == ("eager", "xla")
    with pytest.raises(BadInput, match="--tf-compile must be one of eager, function, xla"):
        runner.set_compile("jit")


@pytest.mark.parametrize("extra, message, loads", [
    (["--backend", "tf", "--tf-compile", "function", "--dropout-masks", "shared"],
     "--tf-compile function with --dropout-masks shared: a compiled training step", True),
    (["--backend", BACKENDS[0], "--tf-compile", "xla"], f"--tf-compile xla compiles the TensorFlow step: it needs "
                                                        f"--backend tf, not {BACKENDS[0]}", False),
])
def test_bad_compile_options_exit_2_in_one_line(extra, message, loads, tmp_path, capsys, monkeypatch):
    import tasks.train.job

    if not loads:
        monkeypatch.setattr(tasks.train.job, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    model, data = write_model_folder(tmp_path / "model", "bert", dropout=True), write_glue(tmp_path / "data")
    argv = ["finetune", "--task", "sst-2", "--model", model, "--data-dir", data, "--output-dir", tmp_path / "out",
            "--do-train", "--no-progress", "--max-steps", "1", "--max-seq-length", "16", *extra]
    assert main([str(a) for a in argv]) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("note: ")]
    assert len(err) == 1 and message in err[0] and ": error: " in err[0]
    assert not (tmp_path / "out").exists()
