"""Cost formulas of search/cost.py against values worked out by hand from the formulas they claim."""

import math

import pytest
import torch

from core.size_model import binary_entropy, layer_size_bits
from search.cost import LatencyTable, layer_bops, layer_macs, relaxed_macs


def entropy_by_hand(s: float) -> float:
    """H2(s) = -s log2 s - (1 - s) log2 (1 - s)."""
    return -s * math.log2(s) - (1 - s) * math.log2(1 - s)


# ---------------------------------------------------------------- size model


def test_binary_entropy_is_zero_at_and_beyond_the_ends_of_the_unit_interval():
    for s in (0.0, 1.0, -0.25, 1.5):
        assert binary_entropy(s) == 0.0


@pytest.mark.parametrize("s,by_hand", [
    (0.25, 0.5 + 0.75 * math.log2(4 / 3)),  # 0.25 * log2 4 + 0.75 * log2 (4/3) = 0.811278 bits
    (0.5, 1.0),
    (0.1, 0.1 * math.log2(10) + 0.9 * math.log2(10 / 9)),
    (0.9, 0.1 * math.log2(10) + 0.9 * math.log2(10 / 9)),
])
def test_binary_entropy_values(s, by_hand):
    assert binary_entropy(s) == pytest.approx(by_hand, rel=1e-12)


@pytest.mark.parametrize("elements,nonzero,bits", [(1000, 0.25, 4), (250, 0.1, 2), (64, 1.0, 8), (10, 0.0, 8)])
def test_layer_size_is_elements_times_value_bits_plus_mask_entropy(elements, nonzero, bits):
    """eps = N * (s * b + H2(s)): s*b bits of values and H2(s) bits of mask per weight element."""
    mask = entropy_by_hand(nonzero) if 0 < nonzero < 1 else 0.0
    assert layer_size_bits(elements, nonzero, bits) == pytest.approx(elements * (nonzero * bits + mask), rel=1e-12)


def test_layer_size_at_a_quarter_density_and_four_bits():
    # 1000 * (0.25 * 4 + H2(0.25)) = 1000 * (1 + 0.811278)
    assert layer_size_bits(1000, 0.25, 4) == pytest.approx(1811.278124459133, rel=1e-12)


# ---------------------------------------------------------------- MACs


def test_layer_macs_default_to_a_single_output_pixel():
    assert layer_macs("conv", 3, 16, 32) == 3 * 3 * 16 * 32
    assert layer_macs("conv", 1, 8, 4, 5) == 8 * 4 * 5  # width left at one pixel
    assert layer_macs("dwconv", 3, 8, 8) == 3 * 3 * 8
    assert layer_macs("dwconv", 5, 8, 8, out_width=2) == 5 * 5 * 8 * 2


def test_relaxed_macs_take_full_input_width_by_default():
    assert relaxed_macs(1000, 0.5) == pytest.approx(500.0)
    width = torch.tensor([0.25, 0.75])
    assert torch.allclose(relaxed_macs(1000, width), torch.tensor([250.0, 750.0]))


# ---------------------------------------------------------------- BOPs


def test_depthwise_bops_count_one_channel_per_filter():
    """3x3 depthwise, 16 channels of 8-bit activations, 16 filters of 4-bit weights, 5x5 output: per
    output pixel a filter makes 9 products of 8x4 bits and 9 additions of log2(2^4 * 9 * 2^8) bits."""
    by_hand = 25 * 16 * 9 * (math.log2(2 ** 4 * 9 * 2 ** 8) + 8 * 4)
    assert layer_bops(3, {8: 16}, {4: 16}, 5, 5, depthwise=True) == pytest.approx(by_hand, rel=1e-12)
    # the same layer as a full convolution reads all 16 channels: sums 16 times as long
    full = 25 * 16 * 9 * (16 * math.log2(2 ** 4 * 9 * 16 * 2 ** 8) + 16 * 8 * 4)
    assert layer_bops(3, {8: 16}, {4: 16}, 5, 5) == pytest.approx(full, rel=1e-12)


def test_depthwise_bops_with_mixed_activation_bitwidths_average_over_the_channels():
    """8 channels of 8-bit and 8 of 4-bit activations feeding 16 depthwise 2-bit filters: one channel's
    share is the mean over channels, so products average (8*8*2 + 8*4*2) / 16 = 12 bit-products and
    the accumulator bound is 2^2 * 9 * (8 * 2^8 + 8 * 2^4) / 16 = 4 * 9 * 136."""
    per_pixel = 16 * 9 * (math.log2(4 * 9 * 136) + 12)
    assert layer_bops(3, {8: 8, 4: 8}, {2: 16}, 1, 1, depthwise=True) == pytest.approx(per_pixel, rel=1e-12)


# ---------------------------------------------------------------- latency tables


def latency_table():
    return LatencyTable({"conv": {0.5: 250.0, 1.0: 1000.0}, "dw": {0.5: 60.0, 1.0: 100.0},
                         "fc": {1.0: 40.0}})


def test_latency_table_has_no_fixed_cost_unless_given():
    assert latency_table().fixed == 0.0
    assert LatencyTable({}, fixed=12.5).fixed == 12.5


def test_latency_of_a_convolution_scales_with_its_input_width():
    table = latency_table()
    assert table.layer("conv", 0.5) == 500.0  # half the filters reading the full input: cycles[0.5] / 0.5
    assert table.layer("conv", 0.5, 0.5) == 250.0  # every layer at 0.5: the measured cycles
    assert table.layer("conv", 1.0, 0.5) == 500.0
    assert table.layer("dw", 0.5, 0.25, depthwise=True) == 60.0


def test_relaxed_latency_of_a_convolution_in_double_precision():
    """z = (0.25, 0.75) over widths (1, 0.5): 0.25 * 1000 + 0.75 * 250 = 437.5 cycles, over the expected
    output width 0.625 with the input at full width: 700."""
    table = latency_table()
    z = torch.tensor([[0.25, 0.75]], dtype=torch.float64)
    expected_out = torch.tensor([0.625], dtype=torch.float64)
    relaxed = table.relaxed_layer("conv", z, (1.0, 0.5), expected_out)
    assert relaxed.dtype == torch.float64
    assert relaxed.item() == pytest.approx(700.0, rel=1e-12)
    assert table.relaxed_layer("conv", z, (1.0, 0.5), expected_out, 0.5).item() == pytest.approx(350.0, rel=1e-12)


def test_relaxed_latency_of_a_depthwise_layer_ignores_the_width_ratio():
    table = latency_table()
    z = torch.tensor([[0.25, 0.75]])
    relaxed = table.relaxed_layer("dw", z, (1.0, 0.5), torch.tensor([0.625]), torch.tensor([0.3]), depthwise=True)
    assert relaxed.item() == pytest.approx(0.25 * 100 + 0.75 * 60)


def test_relaxed_latency_without_a_width_decision_uses_full_width_cycles():
    table = latency_table()
    relaxed = table.relaxed_layer("fc", None, (), 1.0, torch.tensor([0.5, 0.75]))
    assert torch.allclose(relaxed, torch.tensor([20.0, 30.0]))


def test_relaxed_latency_names_every_width_option_when_one_is_unmeasured():
    with pytest.raises(ValueError, match=r"no cycles at width 0.25 for layer conv; "
                                         r"measure it at every width option \(1, 0.5, 0.25\)$"):
        latency_table().relaxed_layer("conv", torch.tensor([[1.0, 0.0, 0.0]]), (1.0, 0.5, 0.25), 1.0)
