import numpy as np
import pytest
import torch

from core.data import synthetic
from search.settings import UDC_QUICK
from search.space import kept_count, make_supernet, magnitude_mask, quantize_offset
from search.strategy.budget import Budget, select_configuration
from search.strategy.emit import finish_candidate
from search.strategy.finetune import finetune, stage_lengths

STEPS = {"finetune_steps": 30, "finetune_batch_size": 32}


@pytest.fixture(scope="module")
def dataset():
    return synthetic(n_train=256, n_test=128)


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_qhat_quantizes_beyond_the_pruning_boundary(bits):
    theta = torch.randn(5000)
    mask = magnitude_mask(theta, 0.3)
    beta = theta[~mask].abs().max()
    weight = quantize_offset(theta, bits, torch.tensor(1.0), beta) * mask
    nonzero = weight[weight != 0]
    assert torch.all(weight[~mask] == 0)  # pruned weights stay exact zeros
    assert torch.all(nonzero.abs() >= beta - 1e-6)  # every kept value lies beyond the boundary
    assert len(torch.unique(nonzero)) <= 2 ** bits
    if bits > 1:  # the grid is d*k shifted by beta, k = 0..2^(b-1)-1
        step = 1.0 / (2 ** (bits - 1) - 1)
        codes = (nonzero.abs() - beta) / step
        assert torch.allclose(codes, codes.round(), atol=1e-4)


def configured_mbv2(qhat: bool):
    torch.manual_seed(0)
    model = make_supernet("mbv2", (28, 28, 1), 10, batchnorm=False, bit_options=(8, 4, 2),
                          nonzero_options=(1.0, 0.5, 0.2), width_options=(1.0, 0.5))
    config = {"layers": {}, "skipped": ["b3_add"]}
    for index, name in enumerate(n for n, layer in model.layers.items() if hasattr(layer, "theta")):
        width = 0.5 if name.startswith(("b1_", "stem")) else 1.0
        config["layers"][name] = {"bits": (8, 4, 2)[index % 3], "nonzero": (1.0, 0.5, 0.2)[index % 3], "width": width}
    select_configuration(model, config)
    for layer in model.searchable_layers():
        layer.pruning_offset = qhat
    return model, config


def test_deployed_qhat_weights_lie_on_an_8bit_grid():
    model, config = configured_mbv2(qhat=True)
    for name, choice in config["layers"].items():
        layer = model.layers[name]
        layer.init_range()
        layer.refresh_mask()
        weight = layer.deployed_weight()
        if layer.mask is None:
            continue  # nothing pruned: plain Q, already exact for the export
        step = weight.abs().max() / 127
        codes = weight / step
        assert torch.allclose(codes, codes.round(), atol=1e-3)
        assert len(torch.unique(weight[weight != 0])) <= 2 ** choice["bits"]
        assert torch.all(weight[layer.mask == 0] == 0)
        assert layer.deployed_offset() == pytest.approx(float(layer.pruning_boundary()))


def test_stages_split_the_steps():
    assert stage_lengths(100, (0.4, 0.4, 0.2)) == (40, 40, 20)
    assert sum(stage_lengths(7, (0.35, 0.4, 0.25))) == 7


def test_finetune_reaches_the_target_masks_and_records_norms(dataset):
    model, config = configured_mbv2(qhat=True)
    norms = finetune(model, dataset, 30, 32, 2e-2, (0.3, 0.4, 0.3), quant_noise=0.5, qhat=True, quiet=True)
    assert set(norms) == {"before", "after", "trajectory"} and norms["before"] > 0
    steps = [step for step, _ in norms["trajectory"]]
    assert steps[0] == 0 and steps[-1] == 30 and steps == sorted(steps)
    assert norms["trajectory"][0][1] == norms["before"] and norms["trajectory"][-1][1] == norms["after"]
    for name, choice in config["layers"].items():
        layer = model.layers[name]
        if name.startswith("b3_"):
            continue  # skipped block
        assert layer.quantize_probability == 1.0
        if choice["nonzero"] < 1.0:  # the mask ranks the slice the widths deploy, and keeps nothing outside it
            deployed = layer.mask[layer.kept_slice()]
            assert int(deployed.sum()) == int(layer.mask.sum()) == kept_count(deployed.numel(), choice["nonzero"])


def test_finetuned_candidate_exports_exactly(dataset):
    from harness.export import to_int8_tflite

    model, config = configured_mbv2(qhat=True)
    settings = {**UDC_QUICK, **STEPS, "compare_number_format": True}
    candidate = finish_candidate(model, dataset, settings, True, {"strategy": "udc", "budget_bytes": 1e5,
                                                                  "budget_macs": None}, Budget(model, 1e5, None))
    meta = candidate.spec["meta"]
    assert set(meta["weight_norm"]) == {"before", "after_qhat", "after_plain", "accuracy_plain", "trajectory_qhat",
                                        "trajectory_plain"}
    assert meta["decisions"]["b3_expand"]["op"] == "identity"
    assert "b3_expand" not in {layer["name"] for layer in candidate.weight_layers()}
    assert candidate.weights["stem.weight"].shape[-1] == 8  # width 0.5 of 16, sliced away
    for layer in candidate.weight_layers():
        weight = candidate.weights[f"{layer['name']}.weight"]
        nonzero = np.unique(weight[weight != 0])
        assert len(nonzero) <= 2 ** layer["bits"]
        if layer["offset"] > 0:  # Q-hat layers are deployed as Q(Q-hat, 8, r')
            codes = weight / (np.abs(weight).max() / 127)
            np.testing.assert_allclose(codes, np.round(codes), atol=1e-3)
    assert any(layer["offset"] > 0 for layer in candidate.weight_layers())
    images = dataset.x_train[:16]
    assert len(to_int8_tflite(candidate, images)) > 0  # verify_exact raises on any lost level or zero
