import numpy as np
import pytest

from core import candidate as candidate_io
from core.data import synthetic
from core.errors import UsageError
from search.settings import FULL, QUICK
from search.space import build_torch, kept_count
from search.strategy.uniform import UniformCompression, candidate_name, evaluate

TINY = {"pretrain_epochs": 3, "finetune_steps": 24, "batch_size": 32, "finetune_batch_size": 32, "lr": 4e-3,
        "finetune_lr": 2e-2}


@pytest.fixture(scope="module")
def dataset():
    return synthetic(n_train=512, n_test=256)


@pytest.fixture(scope="module")
def strategy(dataset):
    return UniformCompression(dataset, "mbv2", bits=[8, 2], nonzero=[1.0, 0.5], quiet=True, **TINY)


@pytest.fixture(scope="module")
def pretrained(strategy):
    return strategy.pretrain()


@pytest.fixture(scope="module")
def candidates(strategy, pretrained):
    return list(strategy.run(pretrained))


def test_emits_the_requested_candidates(strategy, candidates, dataset):
    names = ["uniform-mbv2-b8-s100", "uniform-mbv2-b8-s50", "uniform-mbv2-b2-s100", "uniform-mbv2-b2-s50"]
    assert strategy.candidate_names() == names == [c.name for c in candidates]
    for candidate, (bits, nonzero) in zip(candidates, [(8, 1.0), (8, 0.5), (2, 1.0), (2, 0.5)]):
        candidate_io.validate(candidate)
        meta = candidate.spec["meta"]
        assert (meta["strategy"], meta["bits"], meta["nonzero"]) == ("uniform", bits, nonzero)
        assert (meta["supernet"], meta["dataset"]) == ("mbv2", "synthetic")
        assert meta["train"] == strategy.settings()
        assert 0.0 <= meta["accuracy_float"] <= 1.0
        for layer in candidate.weight_layers():
            weight = candidate.weights[f"{layer['name']}.weight"]
            assert layer["bits"] == bits
            assert np.count_nonzero(weight) == round(layer["nonzero"] * weight.size) <= kept_count(weight.size, nonzero)
        assert candidate.spec["input_shape"] == list(dataset.input_shape)


def test_finetuned_8bit_dense_candidate_beats_chance(candidates, dataset):
    best = candidates[0]
    accuracy = evaluate(build_torch(best), dataset.x_test, dataset.y_test)
    assert accuracy == best.spec["meta"]["accuracy_float"]
    assert accuracy > 0.5  # chance is 0.1


def test_candidates_are_reproducible_and_independent_of_order(strategy, pretrained, candidates):
    again = strategy.finetune_candidate(strategy.folded_supernet(pretrained), 2, 0.5)
    assert again.content_hash == candidates[3].content_hash


def test_run_skips_candidates_already_made(strategy, pretrained):
    remaining = list(strategy.run(pretrained, skip=strategy.candidate_names()[:3]))
    assert [c.name for c in remaining] == ["uniform-mbv2-b2-s50"]
    assert list(strategy.run(skip=strategy.candidate_names())) == []


def test_resnet_supernet_runs(dataset):
    strategy = UniformCompression(dataset, "resnet", bits=[4], nonzero=[0.2], quiet=True,
                                  **{**TINY, "pretrain_epochs": 1})
    (candidate,) = strategy.run()
    assert candidate.name == candidate_name("resnet", 4, 0.2) == "uniform-resnet-b4-s20"
    weights = candidate.weights["b1_conv1.weight"]
    assert np.count_nonzero(weights) <= round(0.2 * weights.size)


@pytest.mark.parametrize("arguments,message", [
    ({"supernet": "vgg"}, "unknown supernet"),
    ({"bits": [16]}, "bits must be"),
    ({"nonzero": [0.0]}, "nonzero fractions"),
])
def test_bad_settings_are_usage_errors(dataset, arguments, message):
    with pytest.raises(UsageError, match=message):
        UniformCompression(dataset, **arguments)


def test_presets_name_every_setting(dataset):
    """Every preset key is a recorded training setting, but for the device: where training runs is not what
    it makes (and stays out of the settings a cache is keyed on)."""
    for preset in (QUICK, FULL):
        settings = UniformCompression(dataset, quiet=True, **preset).settings()
        assert "device" not in settings
        assert {k: settings[k] for k in preset if k != "device"} == {k: v for k, v in preset.items() if k != "device"}
