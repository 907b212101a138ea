"""torch's fused attention in passes that read only the final outputs (Runner.predict, serving): the same function
as the unfused attention every other pass runs, padded keys masked, and never used where probabilities are read or
where attention dropout is live."""
from __future__ import annotations

import numpy as np
import pytest

from backends import family

from .test_train_support import seeded_data, tiny_config

torch = pytest.importorskip("torch")

from backends._fw.torch import without_attention_weights  # noqa: E402
from tasks.train import runner_class  # noqa: E402

CASES = [("bert", "seqcls"), ("roberta", "qa"), ("tinybert", "mc"), ("deformer", "qa")]


def runner_and_batch(family_name: str, head: str):
    config = tiny_config(family_name, dropout=True)
    rng = np.random.default_rng(3)
    params = family(family_name).init_params(config, head, rng)
    batch = seeded_data(family_name, config, head, rows=4, seq_len=11)
    masks = [name for name in batch if "attention_mask" in name or name.endswith("_mask")]
    for name in masks:  # ragged padding in every mask the family reads
        batch[name][1, -4:] = 0
        batch[name][3, -2:] = 0
    return runner_class("torch")(family_name, config, head, params, dtype="float64"), batch


@pytest.mark.parametrize("family_name,head", CASES, ids=[f"{f}-{h}" for f, h in CASES])
def test_predict_equals_the_unfused_outputs(family_name, head):
    runner, batch = runner_and_batch(family_name, head)
    fused = runner.predict(batch)
    unfused = runner.outputs(batch)  # eval mode, probabilities materialised
    assert unfused["attentions"][0] is not None
    for name, value in fused.items():
        np.testing.assert_allclose(value, unfused[name].numpy(), rtol=0, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("family_name,head", CASES[:1] + CASES[-1:], ids=["bert-seqcls", "deformer-qa"])
def test_the_fused_kernel_runs_only_where_nothing_reads_the_probabilities(family_name, head):
    runner, batch = runner_and_batch(family_name, head)
    tensors = runner.to_tensors(batch)
    with without_attention_weights():
        assert all(probs is None for probs in runner.forward(tensors, train=False)["attentions"])
        # training with attention dropout: the dropout multiplies the probabilities, so they are materialised
        assert all(probs is not None for probs in runner.forward(tensors, train=True)["attentions"])
    assert all(probs is not None for probs in runner.forward(tensors, train=False)["attentions"])
