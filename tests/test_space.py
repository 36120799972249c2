import numpy as np
import pytest
import torch

from core import candidate as candidate_io
from search.space import (
    GraphNet, SearchableConv2d, SearchableLayer, build_torch, kept_count, magnitude_mask, make_supernet, quantize,
    same_padding, to_candidate, width_mask,
)

SHAPES = [(28, 28, 1), (32, 32, 3)]


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_quantizer_values_lie_on_the_grid_and_clip(bits):
    theta = torch.randn(4000) * 2
    r = torch.tensor(1.5)
    q = quantize(theta, bits, r)
    values = torch.unique(q)
    if bits == 1:
        assert set(values.tolist()) == {-1.5, 1.5}
        return
    levels = 2 ** (bits - 1) - 1
    step = 1.5 / levels
    assert len(values) <= 2 ** bits - 1
    codes = values / step
    assert torch.allclose(codes, torch.round(codes), atol=1e-4)
    assert q.abs().max() <= 1.5 + 1e-6
    outside = theta.abs() > 1.5
    assert torch.allclose(q[outside], 1.5 * torch.sign(theta[outside]))
    assert len(values) == 2 ** bits - 1  # 4000 draws of N(0, 4) cover every level


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_straight_through_gradient_reaches_theta_and_range(bits):
    theta = (torch.randn(500) * 2).requires_grad_()
    r = torch.nn.Parameter(torch.tensor(1.0))
    weights = torch.randn(500)
    (quantize(theta, bits, r) * weights).sum().backward()
    inside = theta.detach().abs() <= 1.0
    assert torch.allclose(theta.grad[inside], weights[inside])
    assert torch.all(theta.grad[~inside] == 0)
    assert torch.isfinite(r.grad) and r.grad != 0


def test_magnitude_mask_keeps_exactly_the_largest():
    theta = torch.randn(10, 7)
    for nonzero in (1.0, 0.5, 0.2, 0.001):
        mask = magnitude_mask(theta, nonzero)
        keep = max(1, round(nonzero * theta.numel()))
        assert int(mask.sum()) == keep == kept_count(theta.numel(), nonzero)
        if keep < theta.numel():
            assert theta[mask].abs().min() > theta[~mask].abs().max()


def test_width_mask_keeps_the_first_channels():
    assert width_mask(10, 0.5).tolist() == [True] * 5 + [False] * 5
    assert width_mask(8, 0.01).tolist() == [True] + [False] * 7


def test_same_padding_matches_tensorflow_for_stride_2():
    assert same_padding(4, 3, 2) == (0, 1)
    assert same_padding(28, 3, 2) == (0, 1)
    assert same_padding(28, 3, 1) == (1, 1)
    assert same_padding(7, 3, 2) == (1, 1)
    assert same_padding(5, 1, 2) == (0, 0)
    conv = SearchableConv2d(1, 1, 3, stride=2)
    with torch.no_grad():
        conv.theta.fill_(1.0)
    image = torch.arange(16.0).view(1, 1, 4, 4)
    # TF pads only after: windows rows/cols {0,1,2} and {2,3}; torch's symmetric padding would give 10 first.
    assert conv(image).view(2, 2).tolist() == [[45.0, 39.0], [66.0, 50.0]]


def randomise_batchnorm(model: GraphNet) -> None:
    generator = torch.Generator().manual_seed(1)
    for layer in model.searchable_layers():
        bn = layer.batchnorm
        with torch.no_grad():
            bn.weight.copy_(torch.rand(bn.weight.shape, generator=generator) + 0.5)
            bn.bias.copy_(torch.randn(bn.bias.shape, generator=generator) * 0.1)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(16, *model.input_shape))
    model.eval()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("supernet", ["mbv2", "resnet"])
def test_folding_batchnorm_preserves_outputs(supernet, shape):
    torch.manual_seed(0)
    model = make_supernet(supernet, shape, 10, batchnorm=True)
    randomise_batchnorm(model)
    images = torch.rand(8, *shape)
    with torch.no_grad():
        before = model(images)
        model.fold_batchnorm()
        after = model(images)
    assert all(layer.batchnorm is None for layer in model.searchable_layers())
    assert torch.allclose(before, after, atol=1e-5, rtol=1e-5)


def compressed_supernet(supernet, shape, bits, nonzero, width_options=(1.0,)):
    torch.manual_seed(0)
    model = make_supernet(supernet, shape, 10, batchnorm=True, bit_options=(8, 4, 2, 1), nonzero_options=(0.5, 0.2),
                          width_options=width_options)
    randomise_batchnorm(model)
    model.fold_batchnorm()
    model.select(bits=bits, nonzero=nonzero)
    model.init_ranges()
    model.refresh_masks()
    return model.eval()


def keras_layout(layer, weight):
    order = {"conv": (2, 3, 1, 0), "dwconv": (2, 3, 0, 1), "dense": (1, 0)}[layer.op]
    return weight.permute(order).numpy()


def hand_quantized(theta: np.ndarray, bits: int, value_range: float) -> np.ndarray:
    """Eq. 3 in numpy: r * sign(theta) at 1 bit, else d * round(clip(theta, -r, r) / d), d = r / (2^(b-1) - 1)."""
    r = np.float32(value_range)
    if bits == 1:
        return r * np.sign(theta)
    step = r / np.float32(2 ** (bits - 1) - 1)
    return np.round(np.clip(theta, -r, r) / step) * step


@pytest.mark.parametrize("supernet,shape,bits,nonzero", [
    ("mbv2", (28, 28, 1), 4, 0.5), ("mbv2", (32, 32, 3), 2, 0.2), ("resnet", (28, 28, 1), 8, 0.2),
    ("resnet", (32, 32, 3), 1, 0.5),
])
def test_candidate_holds_deployed_values(tmp_path, supernet, shape, bits, nonzero):
    model = compressed_supernet(supernet, shape, bits, nonzero)
    candidate = to_candidate(model, "test", {"strategy": "test"})
    candidate_io.validate(candidate)
    loaded = candidate_io.load(candidate.save(tmp_path / "c"))
    assert loaded.content_hash == candidate.content_hash
    assert loaded.spec["meta"] == {"strategy": "test"}

    specs = {layer["name"]: layer for layer in candidate.weight_layers()}
    assert set(specs) == {name for name, layer in model.layers.items() if isinstance(layer, SearchableLayer)}
    for name, layer in model.layers.items():
        if name not in specs:
            continue
        spec, weight = specs[name], candidate.weights[f"{name}.weight"]
        theta = keras_layout(layer, layer.theta.detach())
        kept = round(nonzero * theta.size)
        mask = np.zeros(theta.size, bool)
        mask[np.argsort(-np.abs(theta).ravel())[:kept]] = True  # the kept largest |theta|
        mask = mask.reshape(theta.shape)
        np.testing.assert_allclose(weight, hand_quantized(theta, bits, spec["range"]) * mask, rtol=1e-6, atol=1e-7)
        assert np.all(weight[~mask] == 0)  # every pruned weight is an exact zero
        assert np.count_nonzero(weight) == round(spec["nonzero"] * weight.size) <= kept
        distinct = np.unique(weight[weight != 0])
        assert len(distinct) <= (2 if bits == 1 else 2 ** bits - 1)
        step = spec["range"] if bits == 1 else spec["range"] / (2 ** (bits - 1) - 1)
        np.testing.assert_allclose(distinct / step, np.round(distinct / step), atol=1e-3)
        assert (spec["bits"], spec["width"], spec["offset"]) == (bits, 1.0, 0.0)


@pytest.mark.parametrize("supernet,shape,bits,nonzero", [
    ("mbv2", (28, 28, 1), 8, 1.0), ("mbv2", (32, 32, 3), 2, 0.5), ("resnet", (28, 28, 1), 4, 0.2),
    ("resnet", (32, 32, 3), 1, 1.0),
])
def test_build_torch_reproduces_the_supernet(supernet, shape, bits, nonzero):
    model = compressed_supernet(supernet, shape, bits, nonzero)
    images = torch.rand(4, *shape)
    rebuilt = build_torch(to_candidate(model, "test"))
    with torch.no_grad():
        assert torch.allclose(rebuilt(images), model(images), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("supernet", ["mbv2", "resnet"])
def test_width_slices_channels_physically(supernet):
    model = compressed_supernet(supernet, (28, 28, 1), 4, 0.5, width_options=(1.0, 0.5))
    for layer in model.searchable_layers()[:-1]:  # the classifier keeps every class
        layer.select(bits=4, nonzero=0.5, width=0.5)
    model.refresh_masks()
    candidate = to_candidate(model, "half")
    stem = candidate.weight_layers()[0]
    assert stem["out_channels"] == 8 and candidate.weights["stem.weight"].shape == (3, 3, 1, 8)
    images = torch.rand(4, 28, 28, 1)
    with torch.no_grad():
        assert torch.allclose(build_torch(candidate)(images), model(images), atol=1e-5, rtol=1e-5)


def test_residual_add_of_different_widths_is_refused():
    model = compressed_supernet("resnet", (28, 28, 1), 8, 1.0, width_options=(1.0, 0.5))
    model.layers["b1_conv2"].select(bits=8, width=0.5)
    with pytest.raises(ValueError, match="different kept widths"):
        to_candidate(model, "bad")


def test_unfolded_batchnorm_is_refused():
    model = make_supernet("mbv2", (28, 28, 1), 10, batchnorm=True)
    with pytest.raises(ValueError, match="fold BatchNorm"):
        to_candidate(model, "bad")



@pytest.mark.parametrize("bits", [2, 4, 8])
def test_fused_quantizer_matches_its_composed_definition(bits):
    """Q as one autograd node gives the values and gradients of d * round(clip(theta, -r, r) / d) with a
    straight-through round."""
    from search.space import quantize

    theta = torch.randn(64, generator=torch.Generator().manual_seed(bits)) * 0.5
    theta = theta.requires_grad_()
    value_range = torch.tensor(0.7, requires_grad=True)
    upstream = torch.randn(64, generator=torch.Generator().manual_seed(100 + bits))
    fused = quantize(theta, bits, value_range)
    (fused * upstream).sum().backward()
    fused_grads = theta.grad.clone(), value_range.grad.clone()

    theta.grad, value_range.grad = None, None
    step = value_range / (2 ** (bits - 1) - 1)
    scaled = torch.minimum(torch.maximum(theta, -value_range), value_range) / step
    composed = step * (scaled + (torch.round(scaled) - scaled).detach())
    (composed * upstream).sum().backward()
    torch.testing.assert_close(fused, composed)
    torch.testing.assert_close(fused_grads[0], theta.grad)
    torch.testing.assert_close(fused_grads[1], value_range.grad)
    assert (theta.abs() > 0.7).any() and (fused_grads[0][theta.detach().abs() > 0.7] == 0).all()
