"""The comparison arithmetic and pass rules, on synthetic arrays."""
import math

import numpy as np
import pytest

from backends.errors import BadInput
from parity.metrics import diff_stats, noise_ratio
from parity.harness import forward_order, layer_of
from parity.tolerances import Tolerances


def test_diff_stats():
    ref = np.array([1.0, -2.0, 4.0])
    got = np.array([1.0, -2.5, 4.25])
    max_abs, mean_abs, max_rel, scale = diff_stats(got, ref)
    assert (max_abs, mean_abs, max_rel, scale) == (0.5, 0.25, 0.125, 4.0)
    assert diff_stats(np.array([np.nan, 0, 0.0]), ref)[0] == math.inf


def test_noise_ratio_measures_accuracy_against_truth():
    rng = np.random.default_rng(0)
    truth = rng.standard_normal(10_000)
    ref32 = truth.astype(np.float32)
    as_good = (truth + 1e-9 * rng.standard_normal(truth.shape)).astype(np.float32)
    worse = (truth * (1 + 1e-4)).astype(np.float32)
    assert 0.5 < noise_ratio(as_good, ref32, truth) < 2
    assert noise_ratio(ref32, ref32, truth) == 1.0
    assert noise_ratio(worse, ref32, truth) > 100
    # an exactly representable truth does not divide by zero
    exact = np.ones(8)
    assert noise_ratio(exact.astype(np.float32), exact.astype(np.float32), exact) == 0.0


def test_layer_names_and_order():
    hidden = ["embeddings", "encoder.blocks.0.0"]
    assert layer_of("hidden_states.1", hidden) == "encoder.blocks.0.0"
    assert layer_of("grad.encoder.blocks.1.0.attention.q_head.weight", hidden) == "encoder.blocks.1.0"
    assert layer_of("grad.funnel.embeddings.layer_norm.weight", hidden) == "funnel.embeddings.layer_norm"
    names = ["grad.b", "loss", "logits", "attentions.0", "hidden_states.10", "hidden_states.2", "grad.inputs_embeds",
             "grad.a"]
    assert forward_order(names) == ["hidden_states.2", "hidden_states.10", "attentions.0", "logits", "loss", "grad.b",
                                    "grad.a", "grad.inputs_embeds"]


def test_tolerance_overrides():
    assert Tolerances().with_overrides(["float32_max_abs=1e-5"]).float32_max_abs == 1e-5
    with pytest.raises(BadInput, match="float64_abs"):
        Tolerances().with_overrides(["nonsense=1"])
    with pytest.raises(BadInput, match="not a number"):
        Tolerances().with_overrides(["float64_abs=abc"])


def _float32_result(truth: np.ndarray, candidate: np.ndarray, reference: np.ndarray):
    """A TensorResult of a float32 comparison, made as the harness makes it."""
    from parity.metrics import TensorResult, compare_chunks

    stats = compare_chunks([(candidate.ravel(), reference.ravel(), truth.ravel())], truth.size)
    return TensorResult("paddle", "t", "grad", "float32", "", stats.max_abs, stats.mean_abs, stats.max_rel,
                        stats.scale, noise_ratio(candidate, reference, truth), True, truth.size, *stats.errors)


def test_pooled_ratio_ignores_what_the_reference_cannot_resolve():
    """A gradient that is zero in exact arithmetic (an attention key bias) computes to rounding noise in float64
    and float32: relative to it both errors are huge and their ratio is the luck of two roundings. The pool
    leaves it out (the float64 run checks it); a real loss of accuracy on a resolvable tensor still decides."""
    from parity.metrics import pooled_noise_ratio

    rng = np.random.default_rng(0)
    truth = rng.standard_normal(1000)
    honest = _float32_result(truth, truth.astype(np.float32).astype(np.float64),
                             (truth + 1e-8 * rng.standard_normal(1000)).astype(np.float32).astype(np.float64))
    zero = 1e-17 * rng.standard_normal(64)  # float64 rounding of an exact zero
    noisy = _float32_result(zero, 6e-7 * rng.standard_normal(64), 1e-7 * rng.standard_normal(64))
    assert noisy.reference_relative_error > 1 and noisy.noise_ratio > 4
    assert pooled_noise_ratio([honest, noisy]) == pytest.approx(pooled_noise_ratio([honest]))
    assert pooled_noise_ratio([honest]) < 2
    sloppy = _float32_result(truth, (truth + 1e-5 * rng.standard_normal(1000)).astype(np.float32).astype(np.float64),
                             truth.astype(np.float32).astype(np.float64))
    assert pooled_noise_ratio([sloppy, noisy]) > 10  # a 1e-5 error is far above float32 rounding
