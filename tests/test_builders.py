"""The candidate contract has two readers: the torch builder (float accuracy) and the Keras
builder (TFLite export). On the same weights they must compute the same function."""

import numpy as np
import pytest

from harness.export import build_keras
from search.space import build_torch
from tests.candidates import make_candidate


@pytest.mark.parametrize("input_shape", [(28, 28, 1), (32, 32, 3)])
def test_torch_and_keras_builders_agree(input_shape):
    import torch

    candidate = make_candidate(bits=4, nonzero=0.5, seed=3, input_shape=input_shape)
    images = np.random.default_rng(4).random((6, *input_shape), dtype=np.float32)
    keras_model = build_keras(candidate)  # batch size 1, as exported
    keras_out = np.concatenate([np.asarray(keras_model(images[i : i + 1])) for i in range(len(images))])
    with torch.no_grad():
        torch_out = build_torch(candidate)(torch.from_numpy(images)).numpy()
    assert torch_out.shape == (6, 10)
    np.testing.assert_allclose(torch_out, keras_out, rtol=1e-4, atol=1e-5)
    assert np.abs(torch_out).max() > 1e-3  # a network outputting zeros would agree trivially
