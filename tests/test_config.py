"""The config file: budgets, the [udc] section, and the README's documented defaults."""

import tomllib
from pathlib import Path

import pytest

from core.errors import UsageError
from core.units import parse_budget
from harness.config import load_config
from search.settings import UDC_FULL, UDC_QUICK

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.parametrize("text,expected", [("24KB", 24000), ("0.5MB", 500000), ("20KiB", 20480), ("30000", 30000),
                                           ("1.5 kb", 1500), (4096, 4096)])
def test_budgets_parse_with_units(text, expected):
    assert parse_budget(text) == expected


@pytest.mark.parametrize("text", ["24XB", "", "KB", "-1KB", "0", "1e"])
def test_bad_budgets_say_how_to_write_one(text):
    with pytest.raises(UsageError, match="write it like 24KB, 0.5MB, 20KiB or 30000"):
        parse_budget(text)


def test_udc_section_follows_the_preset_and_names_its_file(tmp_path):
    assert load_config()["udc"] == UDC_QUICK
    full = load_config(None, {"run": {"preset": "full"}})["udc"]
    assert full == UDC_FULL and full["search_steps"] > UDC_QUICK["search_steps"]
    config = tmp_path / "c.toml"
    config.write_text("[search]\nsupernet = \"resnet\"\n[udc]\nsamples = 4\n")
    udc = load_config(config)["udc"]
    assert udc["supernet"] == "resnet" and udc["samples"] == 4
    config.write_text("[udc]\nsampels = 4\n")
    with pytest.raises(UsageError, match=rf"{config}: \[udc\] unknown search setting\(s\) sampels"):
        load_config(config)


def test_readme_documents_every_udc_setting_with_its_default():
    block = README.read_text().split("### UDC search settings")[1].split("```toml")[1].split("```")[0]
    documented = tomllib.loads(block)["udc"]
    assert set(documented) == set(UDC_QUICK) - {"kappa_width"}  # None has no TOML spelling
    assert {key: value for key, value in documented.items() if value != UDC_QUICK[key]} == {}


def test_readme_documents_every_peer_setting_with_its_default():
    from search.settings import PEER_DEFAULTS

    block = README.read_text().split("### The seed peers")[1].split("```toml")[1].split("```")[0]
    documented = tomllib.loads(block)
    assert documented == PEER_DEFAULTS


def test_peer_sections_are_checked(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("[unas]\nunas_lambda_latency = 4.0\n")
    assert load_config(config)["unas"]["unas_lambda_latency"] == 4.0
    config.write_text("[zur]\nzur_lambda = \"high\"\n")
    with pytest.raises(UsageError, match=r"\[zur\] search setting zur_lambda = 'high' has the wrong type"):
        load_config(config)


def test_readme_documents_the_firmware_board_and_mlperf_dut_sections_with_their_defaults():
    from harness.config import DEFAULTS

    block = README.read_text().split("## Configuration")[1].split("```toml")[1].split("```")[0]
    documented = tomllib.loads(block)
    for section in ("firmware", "board", "mlperf_dut"):
        assert documented[section] == DEFAULTS[section]


def test_the_firmwares_model_id_and_baud_rate_are_checked_and_reach_the_firmware_targets():
    from targets import TARGETS

    config = load_config()
    assert (config["firmware"]["model_id"], config["firmware"]["baud"]) == ("ic01", 115200)
    for target in ("qemu-an547", "corstone300", "board"):
        options = TARGETS[target].options(load_config(None, {"firmware": {"model_id": "kws01", "baud": 921600}}))
        assert (options["model_id"], options["baud"]) == ("kws01", 921600)
    assert load_config(None, {"firmware": {"baud": 1_562_500}})["firmware"]["baud"] == 1_562_500  # divider 16
    for model_id in ("IC01", "", "kws-01", "a" * 21):
        with pytest.raises(UsageError, match=r"^firmware.model_id = .*: give 1-20 characters of a-z, 0-9 and _"):
            load_config(None, {"firmware": {"model_id": model_id}})
    for baud in (1199, 1_562_501, 2_000_000, 3_000_000):
        with pytest.raises(UsageError, match=rf"^firmware.baud = {baud}: give a rate from 1200 to 2000000"):
            load_config(None, {"firmware": {"baud": baud}})
