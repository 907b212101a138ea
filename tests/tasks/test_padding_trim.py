"""Predictions cut each batch to the positions its rows use (FamilySpec.padding_trimmer), as dynamic padding would:
for per-row heads of the families whose outputs ignore trailing padding, the outputs equal the untrimmed pass's in
float64 in every backend; other heads and families are never trimmed."""
from __future__ import annotations

import numpy as np
import pytest

from backends import FAMILIES, family
from backends.spec import ROW_OUTPUT_HEADS
from tasks.train import runner_class
from tasks.train.loop import predict_all, take

from ..conftest import BACKENDS
from .test_train_support import (losses, lstm_biases_summed, make_runner, make_trainer, max_weight_diff, seeded_data,
                                 tiny_config)

SEQ_LEN = 14
CASES = [(name, head) for name in FAMILIES if family(name).trailing_padding_free
         for head in family(name).heads if head in ROW_OUTPUT_HEADS]


def ragged(family_name: str, config, head: str, rows: int = 5, targets: bool = False) -> dict:
    """Seeded inputs (some rows left-padded) whose rows use none of each text's positions from a random 3..8 on; a
    row left without any position uses its last one before the cut (a fully masked row is no example). With
    `targets`, the seeded training targets are kept."""
    batch = seeded_data(family_name, config, head, rows=rows, seq_len=SEQ_LEN)
    rng = np.random.default_rng(7)
    for name in [name for name in batch if name.endswith("attention_mask")]:
        width = batch[name].shape[-1]
        for row in range(rows):
            cut = rng.integers(3, min(8, width - 1) + 1)
            batch[name][row, ..., cut:] = 0
            batch[name][row, ..., cut - 1] |= ~batch[name][row, ..., :cut].any(axis=-1)
    return {name: value for name, value in batch.items() if targets or name not in ("labels", "start_positions",
                                                                                      "end_positions")}


def test_the_trimmed_families_and_heads():
    assert {name for name, _ in CASES} == {"bert", "roberta", "tinybert", "bilstm", "deformer"}
    assert not family("funnel").trailing_padding_free  # pooling averages padded positions into real ones
    for name in FAMILIES:
        spec = family(name)
        config = tiny_config(name)
        for head in spec.heads:
            if head not in ROW_OUTPUT_HEADS or not spec.trailing_padding_free:  # token-level outputs keep the axis
                assert spec.padding_trimmer(config, head) is None, (name, head)
            if not spec.trains_trimmed:  # BERT-like families: dropout masks span the sequence
                assert spec.training_trimmer(config, head) is None, (name, head)
    assert {name for name in FAMILIES if family(name).trains_trimmed} == {"bilstm"}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("family_name,head", CASES, ids=[f"{f}-{h}" for f, h in CASES])
def test_trimmed_predictions_equal_the_padded_pass(backend, family_name, head):
    config = tiny_config(family_name)
    params = family(family_name).init_params(config, head, np.random.default_rng(3))
    runner = runner_class(backend)(family_name, config, head, params, dtype="float64")
    batch = ragged(family_name, config, head)
    padded = runner.predict(batch)
    widths = []
    predict = runner.predict
    runner.predict = lambda part: widths.append({n: v.shape[-1] for n, v in part.items()}) or predict(part)
    trimmed = predict_all(runner, batch, batch_size=3)
    assert widths and all(width < SEQ_LEN for part in widths for width in part.values())  # it did cut
    for name, value in padded.items():
        np.testing.assert_allclose(trimmed[name], value, rtol=0, atol=1e-12, err_msg=name)


def deformer_batch(config) -> dict:
    """Two DeFormer rows of 4 question and 10 passage positions: the question uses 2, the passage 5 (one row with a
    hole before its end)."""
    batch = ragged("deformer", config, "seqcls", rows=2)
    batch["question_attention_mask"][:] = 0
    batch["question_attention_mask"][:, :2] = 1
    batch["passage_attention_mask"][:] = 0
    batch["passage_attention_mask"][0, :3] = 1
    batch["passage_attention_mask"][1, [0, 1, 3, 4]] = 1  # a hole before the end: the last used position counts
    assert (batch["question_input_ids"].shape[-1], batch["passage_input_ids"].shape[-1]) == (4, 10)
    return batch


def assert_cut(cut: dict, batch: dict, question: int, passage: int) -> None:
    """`cut` holds each of `batch`'s inputs cut to its text's width: `question` or `passage` positions."""
    assert {name: value.shape[-1] for name, value in cut.items()} == {
        **{f"question_{f}": question for f in ("input_ids", "attention_mask", "token_type_ids")},
        **{f"passage_{f}": passage for f in ("input_ids", "attention_mask", "token_type_ids")}}
    for name, value in cut.items():
        np.testing.assert_array_equal(value, batch[name][..., :value.shape[-1]])


def test_each_text_is_cut_to_its_own_width():
    """DeFormer: the question and the passage are separate texts with their own masks."""
    config = tiny_config("deformer")
    batch = deformer_batch(config)
    assert_cut(family("deformer").padding_trimmer(config, "seqcls")(batch), batch, 2, 5)


def test_a_multiple_rounds_the_cut_up_within_the_batch():
    """pad_to_multiple_of: each text's width rounded up to the multiple, never past the batch's own width."""
    config = tiny_config("deformer")
    batch = deformer_batch(config)
    for multiple, question, passage in ((1, 2, 5), (4, 4, 8), (3, 3, 6), (8, 4, 8), (64, 4, 10)):
        assert_cut(family("deformer").padding_trimmer(config, "seqcls", multiple=multiple)(batch), batch, question,
                   passage)


@pytest.mark.parametrize("mode", ["function", "xla"])
def test_compiled_tf_predictions(mode, monkeypatch):
    """A compiled TF pass is traced per input shape (the ports read static shapes): predict cuts its batches to a
    multiple of COMPILED_WIDTH_STEP positions, one trace per width, the outputs those of the eager padded pass."""
    if "tf" not in BACKENDS:
        pytest.skip("needs tensorflow")
    from backends._fw.tf import train as tf_train

    monkeypatch.setattr(tf_train, "COMPILED_WIDTH_STEP", 4)  # read when the Runner is built
    config = tiny_config("bert")
    params = family("bert").init_params(config, "seqcls", np.random.default_rng(3))
    runner = runner_class("tf")("bert", config, "seqcls", params, dtype="float64")
    batch = ragged("bert", config, "seqcls", rows=9)
    padded = runner.predict(batch)  # eager
    runner.set_compile(mode, train=False)
    widths = []
    predict = runner.predict
    runner.predict = lambda part: widths.append(part["input_ids"].shape) or predict(part)
    np.testing.assert_allclose(predict_all(runner, batch, batch_size=1)["logits"], padded["logits"], rtol=0,
                               atol=1e-12)

    def cut_widths(multiple):  # of each row's batch
        trim = family("bert").padding_trimmer(config, "seqcls", multiple=multiple)
        return [trim(take(batch, slice(row, row + 1)))["input_ids"].shape[-1] for row in range(9)]
    assert [width for _, width in widths] == cut_widths(4) != cut_widths(1)
    assert set(cut_widths(4)) == {4, 8}  # the rows use 3..8 positions
    assert runner.compiled_forward.experimental_get_tracing_count() == 2  # a trace per width
    runner.set_compile("eager", train=False)  # back to the exact cut
    widths.clear()
    predict_all(runner, batch, batch_size=1)
    assert [width for _, width in widths] == cut_widths(1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("pair", [False, True], ids=["single", "pair"])
def test_trimmed_training_equals_the_padded_one(backend, pair, tmp_path):
    """The BiLSTM trains on micro-batches cut to the positions their rows use (FamilySpec.trains_trimmed): the same
    losses and weights as on the padded batches, dropout on with shared masks, in float64."""
    config = tiny_config("bilstm", dropout=True, pair=pair)
    data = ragged("bilstm", config, "seqcls", rows=16, targets=True)
    runs, widths = {}, []
    for trimmed in (True, False):
        runner = make_runner(backend, "bilstm", config, "seqcls", "float64")
        if trimmed:
            assert runner.trim_training is not None
            def recording_widths(batch, *rest, forward_backward=runner.forward_backward):
                widths.append(max(value.shape[-1] for name, value in batch.items() if "input_ids" in name))
                return forward_backward(batch, *rest)

            runner.forward_backward = recording_widths
        else:
            runner.trim_training = None
        trainer = make_trainer(runner, data, tmp_path / str(trimmed), learning_rate=1e-3, max_steps=6, batch_size=4,
                               grad_accum=2)
        trainer.train()
        runs[trimmed] = (losses(trainer), lstm_biases_summed(runner.get_params()))
    assert widths and min(widths) < SEQ_LEN  # micro-batches were cut (a left-padded row keeps its text whole)
    (trimmed_losses, trimmed_params), (padded_losses, padded_params) = runs[True], runs[False]
    assert len(trimmed_losses) == 6
    np.testing.assert_allclose(trimmed_losses, padded_losses, rtol=0, atol=1e-12)
    assert max_weight_diff(trimmed_params, padded_params) <= 1e-12
