"""Paddle results to numpy (backends/_fw/paddle to_numpy): a CPU tensor is shared, not copied (paddle's .numpy()
copied every output and gradient: the parity workers' fetch took minutes at funnel-xlarge); bfloat16, which numpy
lacks, still comes as its bits."""
from __future__ import annotations

import numpy as np
import pytest

from ..conftest import BACKENDS

pytestmark = pytest.mark.skipif("paddle" not in BACKENDS, reason="needs paddle")


def test_a_cpu_tensor_and_its_gradient_are_shared_not_copied():
    import paddle

    from backends import framework

    adapter = framework("paddle")
    weight = paddle.to_tensor(np.arange(12, dtype=np.float64).reshape(3, 4), stop_gradient=False)
    (weight * weight).sum().backward()
    for tensor, expected in ((weight, np.arange(12.0).reshape(3, 4)), (weight.grad, 2 * np.arange(12.0).reshape(3, 4))):
        array = adapter.to_numpy(tensor)
        assert array.__array_interface__["data"][0] == tensor.data_ptr()  # the tensor's own memory
        assert array.dtype == np.float64 and np.array_equal(array, expected)
    view = adapter.to_numpy(paddle.transpose(weight, [1, 0]))  # a strided view keeps its layout
    assert np.array_equal(view, np.arange(12.0).reshape(3, 4).T)


def test_bfloat16_comes_as_its_bits():
    import paddle

    from backends import framework

    bits = framework("paddle").to_numpy(paddle.to_tensor(np.array([1.0, 2.0, -3.0], np.float32)).astype("bfloat16"))
    assert bits.dtype == np.uint16 and bits.tolist() == [0x3F80, 0x4000, 0xC040]
