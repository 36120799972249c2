"""UNAS as its appendix prints it: pi trained on the generalisation loss L_gen = L_train + lambda (L_val -
L_train) of a held-out validation split while theta sees L_train alone, skip-connection dropout 0.1 and a
constant Gumbel-softmax temperature of 0.4."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.data import synthetic
from core.errors import UsageError
from harness.config import load_config
from search.settings import UDC_QUICK
from search.strategy import udc
from search.strategy.pretrain import pretrain_state
from search.strategy.unas import UNASSearch

VALIDATION = 32
# One bitwidth and dense weights (held, not searched: a quick search), widths and blocks searched.
SEARCH = {"bit_options": [8], "nonzero_options": [1.0], "width_options": [1.0, 0.5], "warmup_steps": 2,
          "search_steps": 2, "samples": 2, "batch_size": 8, "validation_images": VALIDATION, "finetune_steps": 1}
BUDGET = 60000


def fixed_cycles(candidate, calibration):
    """A cost provider whose cycles no layer owns: a constant latency, under its target by construction."""
    return [("net/fixed/", 1000.0)]


@pytest.fixture(scope="module")
def dataset():
    return synthetic(n_train=96, n_test=16, shape=(12, 12, 1))


@pytest.fixture(scope="module")
def pretrained(dataset):
    return pretrain_state(dataset, {**UDC_QUICK, **SEARCH, "pretrain_epochs": 1, "pretrain_batch_size": 32,
                                    "device": "cpu"}, True)


def searched(data, pretrained, **settings):
    """theta and pi after one warm-up step and one search step."""
    search = UNASSearch(data, budget_bytes=BUDGET, settings={**SEARCH, **settings}, quiet=True, pretrained=pretrained,
                        operator_cycles=fixed_cycles)
    model = search.search()
    return ({key: value.detach().clone() for key, value in model.state_dict().items()},
            {key: decision.logits.detach().clone() for key, decision in search.decisions.items()})


def recording_temperatures(monkeypatch) -> list[float]:
    """The temperature of every Gumbel-softmax draw the searches make from now on."""
    taus, mixed = [], udc.mixed_sample

    def recording(log_pi, tau, *args):
        taus.append(tau)
        return mixed(log_pi, tau, *args)

    monkeypatch.setattr(udc, "mixed_sample", recording)
    return taus


@pytest.fixture(scope="module")
def printed(dataset, pretrained):
    """The search with the printed settings, and the temperatures it drew at."""
    with pytest.MonkeyPatch.context() as patch:
        taus = recording_temperatures(patch)
        return searched(dataset, pretrained), taus


def test_the_validation_loss_reaches_pi_and_not_theta(printed, dataset, pretrained):
    """The validation split's labels changed, or its loss weighed by lambda_gen = 0 (L_gen = L_train): theta
    after the step as before, pi not."""
    (theta, pi), _ = printed
    labels = dataset.y_train.copy()
    labels[-VALIDATION:] = (labels[-VALIDATION:] + 1) % dataset.num_classes
    for name, data, settings in (("other labels", dataclasses.replace(dataset, y_train=labels), {}),
                                 ("train only", dataset, {"unas_lambda_gen": 0.0})):
        other_theta, other_pi = searched(data, pretrained, **settings)
        assert all(torch.equal(theta[key], other_theta[key]) for key in theta), name  # theta saw L_train alone
        assert any(not torch.equal(pi[key], other_pi[key]) for key in pi), name  # pi saw L_val


def test_the_search_runs_at_the_constant_temperature_unless_told_otherwise(printed, dataset, pretrained, monkeypatch):
    _, taus = printed
    assert taus and set(taus) == {0.4}  # warm-up and search alike
    taus = recording_temperatures(monkeypatch)
    searched(dataset, pretrained, unas_tau=0.0)
    assert taus[0] == pytest.approx(UDC_QUICK["tau"][0])  # the [udc] schedule


def test_pi_gets_the_generalisation_loss_and_theta_the_training_loss(dataset, pretrained):
    """One step's gradients against L_train and L_val computed apart: theta's are L_train's, pi's those of
    (1 - lambda) L_train + lambda L_val, the loss's value L_gen."""
    weight = 0.3
    search = UNASSearch(dataset, budget_bytes=BUDGET, settings={**SEARCH, "unas_lambda_gen": weight}, quiet=True,
                        pretrained=pretrained)
    model = search._folded_supernet(pretrained=True)
    search._build_decisions(model)
    model.train()
    images, labels = torch.from_numpy(dataset.x_train[:16]), torch.from_numpy(dataset.y_train[:16])
    val_images, val_labels = torch.from_numpy(dataset.x_train[-16:]), torch.from_numpy(dataset.y_train[-16:])
    pis = list(search.decisions.parameters())
    thetas = [p for p in model.parameters() if p.requires_grad]

    def gradients(loss):
        for p in pis + thetas:
            p.grad = None
        loss.backward()
        return ([torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in pis],
                [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in thetas])

    def z():  # the same draw every time
        return search.sample(0.5, False, torch.Generator().manual_seed(3))

    def loss_under(sample, x, y):
        search.dropout_generator = torch.Generator().manual_seed(5)  # the same shortcuts dropped
        search.relax(model, sample)
        return F.cross_entropy(model(x), y)

    search.validation_batches = iter([(val_images, val_labels)])
    search.dropout_generator = torch.Generator().manual_seed(5)
    generalisation = search.task_loss(model, z(), images, labels, warming_up=False)
    pi_gen, theta_gen = gradients(generalisation)
    train = loss_under(z(), images, labels)
    pi_train, theta_train = gradients(train)
    validation = loss_under(z(), val_images, val_labels)
    pi_val, _ = gradients(validation)

    assert generalisation.item() == pytest.approx(train.item() + weight * (validation.item() - train.item()), rel=1e-6)
    for got, expected in zip(theta_gen, theta_train):
        torch.testing.assert_close(got, expected)
    assert any(g.abs().sum() > 0 for g in pi_val)
    for got, from_train, from_val in zip(pi_gen, pi_train, pi_val):
        torch.testing.assert_close(got, (1 - weight) * from_train + weight * from_val, rtol=1e-4, atol=1e-7)


def test_skip_connections_drop_with_the_printed_probability(dataset):
    search = UNASSearch(dataset, budget_bytes=BUDGET, settings=SEARCH, quiet=True)
    assert search.settings["unas_skip_dropout"] == 0.1
    model = search.model
    search._build_decisions(model)
    model.train()
    search.dropout_generator = torch.Generator().manual_seed(0)
    draws = 4000  # every block at its identity option in each of 4000 samples
    z = {key: F.one_hot(torch.full((draws,), 1 if key.endswith(":op") else 0), len(d.options)).float()
         for key, d in search.decisions.items()}
    search.relax(model, z)
    scales = torch.cat([layer.shortcut_scale for name, layer in model.layers.items() if f"{name}:op" in z])
    assert np.mean((scales == 0).numpy()) == pytest.approx(0.1, abs=0.02)


@pytest.mark.parametrize("settings,message", [
    ({"unas_loss": "validation"}, "unas_loss must be one of generalization, train, got 'validation'"),
    ({"unas_tau": -0.4}, "unas_tau must be a positive constant temperature, or 0 for the [udc] tau schedule"),
    ({"unas_lambda_gen": 1.5}, "unas_lambda_gen must be in [0, 1], got 1.5"),
])
def test_bad_unas_settings_are_one_line_usage_errors(dataset, tmp_path, settings, message):
    with pytest.raises(UsageError) as raised:
        UNASSearch(dataset, budget_bytes=BUDGET, settings={**SEARCH, **settings}, quiet=True)
    assert message in str(raised.value) and "\n" not in str(raised.value)
    (key, value), = settings.items()
    config = tmp_path / "c.toml"
    config.write_text(f"[unas]\n{key} = {value!r}\n".replace("'", '"'))
    with pytest.raises(UsageError, match=rf"\[unas\] {key}"):
        load_config(config)


@pytest.mark.parametrize("images,message", [(8, "validation_images=8 holds fewer images than a search step's 16"),
                                            (96, "validation_images=96 must hold out some of the 96 training images")])
def test_the_validation_split_must_hold_a_search_batch_and_leave_training_images(dataset, images, message):
    search = UNASSearch(dataset, budget_bytes=BUDGET, settings={**SEARCH, "validation_images": images}, quiet=True,
                        operator_cycles=fixed_cycles)
    with pytest.raises(UsageError, match=message):
        search.search()  # before anything trains
    assert search.pretrained is None
