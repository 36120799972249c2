"""Where training runs (``--device``): the names accepted, the one-line refusals, and that naming the CPU
changes nothing a search makes. (No GPU is at hand for the suite: a CUDA run is not exercised here.)"""

import subprocess
import sys

import numpy as np
import pytest
import torch

from core.data import synthetic
from core.errors import UsageError
from harness.config import load_config
from harness.training_cache import training_key
from search import device
from search.strategy.udc import UDCSearch

TINY = {"pretrain_epochs": 1, "pretrain_batch_size": 32, "warmup_steps": 8, "search_steps": 16, "batch_size": 16,
        "finetune_steps": 8, "finetune_batch_size": 32}
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is visible")


@pytest.mark.parametrize("text", ["auto", "cpu", "cuda", "cuda:1"])
def test_device_names_are_accepted(text):
    assert device.check(text) == text


@pytest.mark.parametrize("text", ["gpu", "cuda:", "CPU", "cuda:x", "tpu:0"])
def test_other_names_are_one_line_naming_the_forms(text):
    with pytest.raises(UsageError, match=r"unknown device .*auto, cpu, cuda or cuda:N") as raised:
        device.check(text)
    assert "\n" not in str(raised.value)


@NO_GPU
def test_auto_is_the_cpu_without_a_gpu_and_cuda_is_refused_saying_what_torch_sees():
    assert device.resolve("auto") == torch.device("cpu")
    with pytest.raises(UsageError, match=r"--device cuda:2: torch sees no CUDA device .*give --device cpu or auto"):
        device.resolve("cuda:2")
    with pytest.raises(UsageError, match="no CUDA device"):
        device.process_device("cuda", 1)


def test_config_checks_the_device_of_both_sections():
    with pytest.raises(UsageError, match=r"\[search\] unknown device 'gpu'"):
        load_config(None, {"search": {"device": "gpu"}})
    with pytest.raises(UsageError, match=r"\[udc\] .*unknown device 'gpu'"):
        load_config(None, {"udc": {"device": "gpu"}})
    config = load_config(None, {"search": {"device": "cpu"}, "udc": {"device": "cpu"}})
    assert config["search"]["device"] == config["udc"]["device"] == "cpu"


def test_where_training_runs_is_not_part_of_what_it_made():
    settings = {"supernet": "mbv2", "seed": 0}
    assert training_key("fashion-mnist", "udc", {**settings, "device": "cpu"}) == \
        training_key("fashion-mnist", "udc", {**settings, "device": "cuda:1"}) == \
        training_key("fashion-mnist", "udc", settings)
    assert training_key("fashion-mnist", "udc", settings) != training_key("fashion-mnist", "udc", {**settings, "seed": 1})


@NO_GPU
@pytest.mark.filterwarnings("ignore::search.strategy.budget.BudgetWarning")  # a tiny search repairs its argmax
def test_a_search_on_the_named_cpu_makes_exactly_what_auto_makes_here():
    dataset = synthetic(n_train=256, n_test=64)
    made = {}
    for name in ("auto", "cpu"):
        search = UDCSearch(dataset, budget_bytes=30000, settings={**TINY, "device": name}, quiet=True)
        assert search.device == torch.device("cpu")
        made[name] = search.run()
    for key, value in made["auto"].weights.items():
        np.testing.assert_array_equal(np.asarray(value), np.asarray(made["cpu"].weights[key]))


@NO_GPU
def test_the_cli_refuses_a_gpu_it_cannot_see_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "harness", "search", "--dataset", "synthetic", "--budget",
                             "size_bound=30KB", "--device", "cuda", "--out", str(tmp_path), "--quiet"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--device cuda: torch sees no CUDA device" in lines[0], result.stderr
