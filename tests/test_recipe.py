"""How theta trains: ours (Adam, one cosine) and the UDC paper's recipe (SGD, a cosine per phase, warm
restarts in finetuning stage 1, l2, flips/crops/cutout), and the ``paper`` preset that sets it."""

import numpy as np
import pytest
import torch

from core.data import synthetic
from core.errors import UsageError
from harness.config import load_config
from search.settings import UDC_PAPER, UDC_QUICK, merged_settings
from search.space import make_supernet
from search.strategy import recipe
from search.strategy.finetune import finetune
from search.strategy.udc import UDCSearch

STAGES = (14, 4, 2)


def test_stage_one_restarts_after_each_cycle_twice_as_long():
    factors = [recipe.finetune_lr_factor(step, STAGES, 1e-3, restart_steps=2) for step in range(sum(STAGES))]
    # cycles of 2, 4 and 8 steps in stage 1 (steps 0-1, 2-5, 6-13): each starts at the full rate
    assert [step for step in range(1, 14) if factors[step] > factors[step - 1]] == [2, 6]
    assert factors[0] == factors[2] == factors[6] == 1.0
    assert factors[14] == 1.0 > factors[15] > factors[16] > factors[17] > 1e-3  # stage 2: 1 -> final
    assert factors[18] == pytest.approx(1e-3) and factors[19] == pytest.approx(5e-4)  # stage 3: final -> 0


def test_without_restarts_each_of_stages_one_and_two_decays_once_to_the_final_fraction():
    factors = [recipe.finetune_lr_factor(step, (10, 10, 10), 1e-2) for step in range(31)]
    assert all(a >= b for a, b in zip(factors[:10], factors[1:10]))
    assert factors[10] == 1.0 and factors[20] == pytest.approx(1e-2) and factors[30] == pytest.approx(0.0)


def test_the_per_phase_search_schedule_decays_in_warm_up_and_again_in_the_search():
    factors = [recipe.search_lr_factor(step, 4, 8, 1e-3) for step in range(12)]
    assert factors[0] == factors[4] == 1.0
    assert factors[3] < 0.2 and factors[11] < 0.05 and factors[11] > 1e-3


def test_the_optimiser_follows_the_setting():
    model = make_supernet("mbv2", (28, 28, 1), 10, batchnorm=False)
    sgd = recipe.theta_optimizer(model, 0.1, {"optimizer": "sgd", "weight_decay": 5e-4})
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.param_groups[0]["lr"] == 0.1 and sgd.param_groups[0]["weight_decay"] == 5e-4
    assert sgd.param_groups[0]["momentum"] == recipe.MOMENTUM
    adam = recipe.theta_optimizer(model, 0.1, {"optimizer": "adam", "weight_decay": 0.0})
    assert isinstance(adam, torch.optim.Adam) and len(adam.param_groups) == len(model.searchable_layers())


def test_augmentation_flips_crops_and_cuts_out():
    images = torch.rand(64, 28, 28, 1) + 0.5  # no zeros of their own
    out = recipe.augment(images, np.random.default_rng(0))
    assert out.shape == images.shape
    zeros = (out == 0).flatten(1).sum(1)
    assert bool((zeros > 0).all())  # every image lost a cutout square (and padding where shifted)
    assert bool((zeros <= 16 * 16 + 2 * 4 * 28).all())  # cutout 18 -> 16 px and padding 4 -> 4 at 28 px
    again = recipe.augment(images, np.random.default_rng(0))
    assert torch.equal(out, again)
    assert not torch.equal(out, recipe.augment(images, np.random.default_rng(1)))
    plain = list(recipe.batches(iter([(images, torch.zeros(64))]), {"augment": "none"}, np.random.default_rng(0)))
    assert plain[0][0] is images


def test_the_paper_preset_carries_the_papers_recipe():
    config = load_config(None, {"run": {"preset": "paper"}})
    udc = config["udc"]
    assert udc["samples"] == 32 and udc["pi_lr"] == 1e-3 and udc["theta_lr"] == 0.1
    assert udc["optimizer"] == "sgd" and udc["lr_schedule"] == "per-phase" and udc["final_lr_fraction"] == 1e-3
    assert udc["weight_decay"] == 5e-4 and udc["augment"] == "paper" and udc["search_depth"] is False
    assert udc["warmup_steps"] * 4 == udc["search_steps"]  # 50 and 200 epochs
    assert udc["stage_fractions"] == pytest.approx([254 / 344, 60 / 344, 30 / 344])
    assert udc["width_options"][-1] == pytest.approx(0.1) and len(udc["nonzero_options"]) == 10
    assert config["measure"]["eval_samples"] == 0
    quick = load_config(None, {})["udc"]
    assert quick["optimizer"] == "adam" and quick["augment"] == "none" and quick["samples"] == UDC_QUICK["samples"]


@pytest.mark.parametrize("key, value", [("optimizer", "rmsprop"), ("lr_schedule", "step"), ("augment", "mixup")])
def test_an_unknown_recipe_choice_is_one_line(key, value):
    with pytest.raises(UsageError, match=f"{key} must be one of"):
        merged_settings({key: value})


def test_a_search_and_finetune_run_with_the_papers_recipe():
    """The paper's recipe end to end at toy scale: SGD with l2, per-phase cosine, augmented batches,
    restarts in stage 1; the theta the search trains moves, the candidate is emitted."""
    settings = {**{k: UDC_PAPER[k] for k in ("optimizer", "weight_decay", "lr_schedule", "final_lr_fraction",
                                             "augment", "bit_options")},
                "theta_lr": 0.01, "finetune_lr": 0.01, "warmup_steps": 4, "search_steps": 8, "samples": 2,
                "batch_size": 8, "finetune_steps": 12, "finetune_batch_size": 8, "restart_steps": 2,
                "pretrain_epochs": 0.05, "compare_number_format": False, "validation_images": 16}
    dataset = synthetic(n_train=128, n_test=32)
    search = UDCSearch(dataset, budget_bytes=60_000, settings=settings, quiet=True)
    candidate = search.run()
    assert candidate.spec["meta"]["search"]["optimizer"] == "sgd"
    model = make_supernet("mbv2", (28, 28, 1), 10, batchnorm=False, bit_options=(8, 4, 1))
    before = [p.detach().clone() for p in model.parameters()]
    finetune(model, dataset, 6, 8, 0.01, (0.5, 0.3, 0.2), quiet=True, recipe=search.settings)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
