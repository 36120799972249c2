"""Regression verdicts: statistics on known samples, exact comparison of deterministic metrics, JUnit
output and exit codes, and refusing to compare different targets."""

import json
from xml.etree import ElementTree

import numpy as np
import pytest

from harness.cli import main
from harness.errors import UsageError
from results.regress import compare, junit_xml
from results.store import Store

TOOLS = {"vela": "5.2.0", "tensorflow": "2.21.0"}


def _samples(metrics: dict, target="vela", tools=TOOLS, settings=None):
    return {("net", target): {"metrics": metrics, "tool_versions": dict(tools),
                              "target_settings": settings or {"accelerator": "ethos-u55-128"}}}


def _by_metric(verdicts):
    return {v.metric: v for v in verdicts}


def test_a_real_shift_is_flagged_and_noise_is_not():
    rng = np.random.default_rng(0)
    base = list(1e-3 * (1 + 0.005 * rng.standard_normal(10)))
    slower = list(1.1e-3 * (1 + 0.005 * rng.standard_normal(10)))  # +10%, far beyond 2% and the noise
    noise = list(1e-3 * (1 + 0.005 * rng.standard_normal(10)))  # the same distribution again
    verdicts, _ = compare(_samples({"latency_s": base}), _samples({"latency_s": slower}))
    assert _by_metric(verdicts)["latency_s"].verdict == "REGRESSED" and _by_metric(verdicts)["latency_s"].p_value < 1e-3
    verdicts, _ = compare(_samples({"latency_s": base}), _samples({"latency_s": noise}))
    assert _by_metric(verdicts)["latency_s"].verdict == "UNCHANGED"
    verdicts, _ = compare(_samples({"latency_s": slower}), _samples({"latency_s": base}))
    assert _by_metric(verdicts)["latency_s"].verdict == "IMPROVED"


def test_a_significant_change_under_its_threshold_is_unchanged():
    base = [0.800, 0.801, 0.799, 0.800, 0.802]
    nudged = [0.803, 0.804, 0.802, 0.803, 0.805]  # +0.3 points: significant, but under the 0.5-point threshold
    verdicts, _ = compare(_samples({"accuracy_int8": base}), _samples({"accuracy_int8": nudged}))
    assert _by_metric(verdicts)["accuracy_int8"].verdict == "UNCHANGED"
    verdicts, _ = compare(_samples({"accuracy_int8": base}), _samples({"accuracy_int8": nudged}),
                          thresholds={"accuracy_int8": 0.001})
    assert _by_metric(verdicts)["accuracy_int8"].verdict == "IMPROVED"  # higher accuracy is better


def test_deterministic_metrics_compare_exactly_and_few_samples_use_the_threshold():
    verdicts, _ = compare(_samples({"flash_bytes": [48624.0], "latency_s": [1.0e-3]}),
                          _samples({"flash_bytes": [48625.0], "latency_s": [1.05e-3]}))
    flash, latency = _by_metric(verdicts)["flash_bytes"], _by_metric(verdicts)["latency_s"]
    assert flash.verdict == "REGRESSED" and flash.how == "exact"  # one byte is a regression
    assert latency.verdict == "REGRESSED" and latency.how.startswith("threshold only")


def test_different_targets_or_settings_are_refused_and_tool_changes_warned():
    with pytest.raises(UsageError, match="measured on vela and the candidate run on qemu-an547"):
        compare(_samples({"flash_bytes": [1.0]}), _samples({"flash_bytes": [1.0]}, target="qemu-an547"))
    with pytest.raises(UsageError, match="target settings differ"):
        compare(_samples({"flash_bytes": [1.0]}), _samples({"flash_bytes": [1.0]}, settings={"accelerator": "ethos-u55-64"}))
    _, warnings = compare(_samples({"flash_bytes": [1.0]}), _samples({"flash_bytes": [1.0]}, tools={**TOOLS, "vela": "5.3.0"}))
    assert warnings and "vela 5.2.0 -> 5.3.0" in warnings[0]


def test_junit_names_every_metric_and_fails_the_regressions(tmp_path):
    verdicts, _ = compare(_samples({"flash_bytes": [100.0], "npu_cycles": [50.0]}),
                          _samples({"flash_bytes": [120.0], "npu_cycles": [40.0]}))
    suite = ElementTree.parse(junit_xml(verdicts, tmp_path / "regress.xml")).getroot()
    assert suite.get("tests") == "2" and suite.get("failures") == "1"
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert cases["flash_bytes"].find("failure") is not None
    assert "+20.00%" in cases["flash_bytes"].find("failure").get("message")
    assert cases["npu_cycles"].find("failure") is None and cases["npu_cycles"].get("classname") == "vela.net"


def _store_runs(out, flash_values_per_run, target="vela"):
    with Store.for_output_dir(out) as store:
        for flashes in flash_values_per_run:
            run_id = store.start_run("measure", {}, {})
            for flash in flashes:
                store.add_measurement(run_id, {
                    "status": "ok", "candidate_name": "net", "candidate_hash": "h" * 64, "target": target,
                    "target_settings": {"accelerator": "ethos-u55-128"}, "tool_versions": TOOLS,
                    "flash_bytes": flash, "accuracy_int8": 0.85, "latency_s": 1e-3})
            store.finish_run(run_id, "ok")


def test_regress_command_exit_codes_junit_and_baseline_file(tmp_path, capsys):
    out = tmp_path / "out"
    _store_runs(out, [[1000], [1000], [1200]])
    assert main(["regress", "--out", str(out), "--baseline", "1", "--candidate", "2"]) == 0
    assert "UNCHANGED" in capsys.readouterr().out
    junit = tmp_path / "r.xml"
    assert main(["regress", "--out", str(out), "--baseline", "1", "--junit", str(junit)]) == 1  # latest = run 3
    printed = capsys.readouterr().out
    assert "REGRESSED" in printed and "1 REGRESSED" in printed
    assert ElementTree.parse(junit).getroot().get("failures") == "1"
    baseline = tmp_path / "baseline.json"
    assert main(["regress", "--out", str(out), "--candidate", "3", "--update-baseline", str(baseline)]) == 0
    assert json.loads(baseline.read_text())["entries"][0]["metrics"]["flash_bytes"] == [1200.0]
    assert main(["regress", "--out", str(out), "--baseline", str(baseline), "--candidate", "3"]) == 0


@pytest.mark.parametrize("arguments,message", [
    (["--baseline", "9"], "no run 9 in the store"),
    (["--baseline", "one"], "give run ids like 12 or 12,13,14"),
    ([], "give --baseline"),
])
def test_regress_bad_input_is_one_line(tmp_path, capsys, arguments, message):
    out = tmp_path / "out"
    _store_runs(out, [[1000]])
    assert main(["regress", "--out", str(out), *arguments]) == 2
    assert message in capsys.readouterr().err


def test_regress_refuses_runs_on_different_targets(tmp_path, capsys):
    out = tmp_path / "out"
    _store_runs(out, [[1000]])
    _store_runs(out, [[1000]], target="qemu-an547")
    assert main(["regress", "--out", str(out), "--baseline", "1", "--candidate", "2"]) == 2
    assert "compare runs on the same target" in capsys.readouterr().err
