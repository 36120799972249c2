"""Regression verdicts: statistics on known samples, exact comparison of deterministic metrics, JUnit
output and exit codes, and refusing to compare different targets."""

import json
import math
from itertools import combinations
from xml.etree import ElementTree

import numpy as np
import pytest

from core.errors import UsageError
from harness.cli import main
from results.regress import METRICS, compare, junit_xml, read_baseline, samples_from_rows, write_baseline
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


# -- statistics, each expectation worked out by hand or by enumeration -------------------------------------


def _exact_p(x, y):
    """Two-sided exact Mann-Whitney p for samples without ties, by enumerating every way to draw len(x) of the
    pooled ranks: the share of draws whose U (rank sum less its minimum) lies at least as far from
    n1*n2/2 as the observed one."""
    rank = {value: r for r, value in enumerate(sorted(x + y), start=1)}
    least, middle = len(x) * (len(x) + 1) / 2, len(x) * len(y) / 2
    observed = abs(sum(rank[v] for v in x) - least - middle)
    draws = [sum(drawn) - least for drawn in combinations(range(1, len(x) + len(y) + 1), len(x))]
    return sum(abs(u - middle) >= observed for u in draws) / len(draws)


def test_a_change_beyond_the_threshold_that_the_test_cannot_tell_from_noise_is_unchanged():
    """Overlapping samples: the medians differ by 1/24 (over the 2% threshold) but Mann-Whitney keeps
    "same distribution", so the verdict is UNCHANGED and the p reported is the test's."""
    before = [1.00e-3, 1.10e-3, 1.20e-3, 1.30e-3, 1.40e-3]
    after = [1.05e-3, 1.15e-3, 1.25e-3, 1.35e-3, 1.45e-3]
    expected_p = _exact_p(before, after)
    assert expected_p >= 0.05  # precondition: the samples are indistinguishable at alpha 0.05
    latency = _by_metric(compare(_samples({"latency_s": before}), _samples({"latency_s": after}))[0])["latency_s"]
    assert latency.change == pytest.approx(0.05 / 1.20)  # medians 1.20 ms -> 1.25 ms
    assert latency.verdict == "UNCHANGED"
    assert latency.p_value == pytest.approx(expected_p) and latency.how == "Mann-Whitney U, alpha 0.05"


def test_three_samples_a_side_use_the_test_and_two_use_the_threshold():
    """At 3 samples a side Mann-Whitney decides; fully separated samples of 3 give p = 2/C(6,3) = 0.1, too
    weak at 0.05, so even a doubling is UNCHANGED. With 2 on either side the threshold alone decides."""
    three = compare(_samples({"latency_s": [1.00e-3, 1.01e-3, 1.02e-3]}),
                    _samples({"latency_s": [2.00e-3, 2.01e-3, 2.02e-3]}))[0][0]
    assert three.how.startswith("Mann-Whitney") and three.p_value == pytest.approx(2 / math.comb(6, 3))
    assert three.verdict == "UNCHANGED"
    for before, after in (([1.00e-3, 1.01e-3], [2.00e-3, 2.01e-3]),
                          ([1.00e-3, 1.01e-3, 1.02e-3], [2.00e-3, 2.01e-3]),
                          ([1.00e-3, 1.01e-3], [2.00e-3, 2.01e-3, 2.02e-3])):
        few = compare(_samples({"latency_s": before}), _samples({"latency_s": after}))[0][0]
        assert few.how == "threshold only (< 3 samples)" and few.p_value is None
        assert few.verdict == "REGRESSED", (before, after)


def test_verdicts_and_reported_values_follow_the_median_not_the_mean():
    """One wild sample moves the mean but not the median: the median decides and is what is reported."""
    flash = _by_metric(compare(_samples({"flash_bytes": [100.0, 100.0, 100.0]}),
                               _samples({"flash_bytes": [100.0, 100.0, 400.0]}))[0])["flash_bytes"]
    assert (flash.verdict, flash.baseline, flash.latest, flash.change) == ("UNCHANGED", 100.0, 100.0, 0.0)
    # 8 samples a side; the latest run is 0.09 ms slower except for one 0.01 ms outlier, which pulls its mean
    # (0.99 ms) below the baseline's (1.035 ms) while the median rises from 1.035 ms to 1.125 ms
    before = [1.00e-3, 1.01e-3, 1.02e-3, 1.03e-3, 1.04e-3, 1.05e-3, 1.06e-3, 1.07e-3]
    after = [0.01e-3, 1.10e-3, 1.11e-3, 1.12e-3, 1.13e-3, 1.14e-3, 1.15e-3, 1.16e-3]
    assert _exact_p(before, after) < 0.05  # precondition: a real shift
    latency = _by_metric(compare(_samples({"latency_s": before}), _samples({"latency_s": after}))[0])["latency_s"]
    assert latency.baseline == pytest.approx(1.035e-3) and latency.latest == pytest.approx(1.125e-3)
    assert latency.change == pytest.approx(0.09 / 1.035)
    assert latency.verdict == "REGRESSED"


def test_the_accuracy_threshold_is_absolute_points():
    """0.5 points of accuracy, not 0.5%: 0.4 points down at 30% accuracy (1.3% relative) is UNCHANGED,
    0.6 points down at 90% (0.67% relative) is REGRESSED, and the change is reported in points."""
    low = compare(_samples({"accuracy_int8": [0.300, 0.300]}), _samples({"accuracy_int8": [0.296, 0.296]}))[0][0]
    assert low.change == pytest.approx(-0.004) and low.verdict == "UNCHANGED"
    high = compare(_samples({"accuracy_int8": [0.900, 0.900]}), _samples({"accuracy_int8": [0.894, 0.894]}))[0][0]
    assert high.change == pytest.approx(-0.006) and high.verdict == "REGRESSED"
    assert high.row()[6] == "-0.60 pts"


def test_a_zero_baseline_is_an_infinite_change_unless_both_are_zero():
    """0 -> 64 bytes of SRAM has no finite relative change: it is inf and a regression; 0 -> 0 is no change."""
    grew = compare(_samples({"sram_bytes": [0.0]}), _samples({"sram_bytes": [64.0]}))[0][0]
    assert grew.change == math.inf and grew.verdict == "REGRESSED" and grew.row()[6] == "+inf%"
    same = compare(_samples({"sram_bytes": [0.0]}), _samples({"sram_bytes": [0.0]}))[0][0]
    assert same.change == 0.0 and same.verdict == "UNCHANGED"


def _store_rows(out, rows):
    """Store ``rows`` (status and metrics) of candidate 'net' on 'vela' as one run; its stored measurements."""
    with Store.for_output_dir(out) as store:
        run_id = store.start_run("measure", {}, {})
        for row in rows:
            store.add_measurement(run_id, {
                "candidate_name": "net", "candidate_hash": "h" * 64, "target": "vela",
                "target_settings": {"accelerator": "ethos-u55-128"}, "tool_versions": TOOLS, **row})
        store.finish_run(run_id, "ok")
        return store.measurements(run_id)


def test_failed_rows_are_not_samples(tmp_path):
    """A failed measurement that still recorded a Flash size is left out: counting it (median of 1000 and
    5000 = 3000) would turn an unchanged model into a regression."""
    baseline = samples_from_rows(_store_rows(tmp_path / "a", [{"status": "ok", "flash_bytes": 1000}]))
    latest_rows = _store_rows(tmp_path / "b", [{"status": "failed", "error": "vela crashed", "flash_bytes": 5000},
                                               {"status": "ok", "flash_bytes": 1000}])
    latest = samples_from_rows(latest_rows)
    assert latest[("net", "vela")]["metrics"] == {"flash_bytes": [1000.0]}
    assert compare(baseline, latest)[0][0].verdict == "UNCHANGED"


def test_samples_are_grouped_per_candidate_and_target_from_columns_and_extra():
    """Values come from the row's column or, for metrics without one, from ``extra``; None and NaN are no
    samples; each (candidate, target) keeps the tool versions and target settings it was measured with."""
    def row(name, target, **values):
        return {"status": "ok", "candidate_name": name, "target": target, "tool_versions": {"vela": "5.2.0"},
                "target_settings": {"t": target}, "extra": values.pop("extra", {}), **values}

    grouped = samples_from_rows([
        row("a", "vela", flash_bytes=10, latency_s=None, extra={"instructions": 7}),
        row("a", "vela", flash_bytes=11, latency_s=float("nan")),
        row("a", "qemu", flash_bytes=12),
        row("b", "vela", accuracy_int8=0.5),
    ])
    unknown = {"evaluations": [None], "predictions": [], "windowed": False, "git_sha": None}
    assert grouped == {
        ("a", "vela"): {"metrics": {"flash_bytes": [10.0, 11.0], "instructions": [7.0]},
                        "tool_versions": {"vela": "5.2.0"}, "target_settings": {"t": "vela"}, **unknown},
        ("a", "qemu"): {"metrics": {"flash_bytes": [12.0]}, "tool_versions": {"vela": "5.2.0"},
                        "target_settings": {"t": "qemu"}, **unknown},
        ("b", "vela"): {"metrics": {"accuracy_int8": [0.5]}, "tool_versions": {"vela": "5.2.0"},
                        "target_settings": {"t": "vela"}, **unknown},
    }


# metric -> (compared exactly, lower is better), as the README specifies them
SPEC = {"flash_bytes": (True, True), "sram_bytes": (True, True), "npu_cycles": (True, True),
        "total_cycles": (True, True), "instructions": (True, True), "latency_s": (False, True),
        "accuracy_int8": (False, False)}


def test_every_metric_has_a_direction_here():
    assert set(SPEC) == set(METRICS)


@pytest.mark.parametrize("metric", sorted(SPEC))
def test_each_metric_knows_which_way_is_worse(metric):
    """A clear rise is REGRESSED for sizes, cycles, instructions and latency and IMPROVED for accuracy; a
    clear fall the reverse. Deterministic metrics say 'exact', the others name the test."""
    exact, lower_is_better = SPEC[metric]
    low = [0.5 + 0.001 * i for i in range(8)]
    high = [0.6 + 0.001 * i for i in range(8)]  # +20% (relative) or +10 points (absolute), fully separated
    rise = compare(_samples({metric: low}), _samples({metric: high}))[0][0]
    fall = compare(_samples({metric: high}), _samples({metric: low}))[0][0]
    assert (rise.verdict, fall.verdict) == (("REGRESSED", "IMPROVED") if lower_is_better else ("IMPROVED", "REGRESSED"))
    assert rise.how == ("exact" if exact else "Mann-Whitney U, alpha 0.05")


def test_identical_samples_have_p_one_and_equal_value_sets_are_still_tested():
    """Identical samples are p = 1. Samples with the same values in other proportions are a real shift:
    7 of 8 at 1.0 ms before, 7 of 8 at 1.1 ms after; by the hypergeometric count the exact two-sided
    p is 2 * (C(8,7) C(8,1) + C(8,8) C(8,0)) / C(16,8) ~ 0.01, so +10% on the median is REGRESSED."""
    same = [1.0e-3, 1.1e-3, 1.2e-3, 1.3e-3]
    identical = compare(_samples({"latency_s": same}), _samples({"latency_s": list(reversed(same))}))[0][0]
    assert identical.p_value == 1.0 and identical.verdict == "UNCHANGED"
    exact_p = 2 * (math.comb(8, 7) * math.comb(8, 1) + math.comb(8, 8) * math.comb(8, 0)) / math.comb(16, 8)
    assert exact_p < 0.05  # precondition
    before, after = [1.0e-3] * 7 + [1.1e-3], [1.0e-3] + [1.1e-3] * 7
    shifted = compare(_samples({"latency_s": before}), _samples({"latency_s": after}))[0][0]
    assert shifted.change == pytest.approx(0.1) and shifted.p_value < 0.05
    assert shifted.verdict == "REGRESSED"


def test_thresholds_can_be_overridden_and_unknown_names_are_refused():
    """A wider latency threshold keeps a significant +10% UNCHANGED; a Flash threshold tolerates growth
    within it; a threshold for a metric that does not exist is a one-line UsageError."""
    before = [1.00e-3 + 1e-6 * i for i in range(8)]
    after = [1.10e-3 + 1e-6 * i for i in range(8)]
    assert compare(_samples({"latency_s": before}), _samples({"latency_s": after}))[0][0].verdict == "REGRESSED"
    assert compare(_samples({"latency_s": before}), _samples({"latency_s": after}),
                   thresholds={"latency_s": 0.15})[0][0].verdict == "UNCHANGED"
    flash = ({"flash_bytes": [1000.0]}, {"flash_bytes": [1010.0]})  # +1%
    assert compare(_samples(flash[0]), _samples(flash[1]), thresholds={"flash_bytes": 0.02})[0][0].verdict == "UNCHANGED"
    assert compare(_samples(flash[0]), _samples(flash[1]), thresholds={"flash_bytes": 0.005})[0][0].verdict == "REGRESSED"
    with pytest.raises(UsageError, match=r"unknown regress metric\(s\) latency; known: flash_bytes, "):
        compare(_samples(flash[0]), _samples(flash[1]), thresholds={"latency": 0.1})


def _cli_verdicts(printed):
    """metric -> verdict from the table 'regress' prints."""
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in printed.splitlines()
            if line.startswith("| net ")]
    return {row[2]: row[3] for row in rows}


def test_config_sets_thresholds_and_alpha(tmp_path, capsys):
    """[regress] in the config file reaches the verdicts: a 25% Flash threshold forgives +20%, and alpha
    0.2 lets three fully separated latency samples a side (p = 0.1) count as a regression."""
    out = tmp_path / "out"
    for flash, latencies in ((1000, (1.00e-3, 1.01e-3, 1.02e-3)), (1200, (2.00e-3, 2.01e-3, 2.02e-3))):
        _store_rows(out, [{"status": "ok", "flash_bytes": flash, "latency_s": latency} for latency in latencies])
    arguments = ["regress", "--out", str(out), "--baseline", "1", "--candidate", "2"]
    assert main(arguments) == 1
    assert _cli_verdicts(capsys.readouterr().out) == {"flash_bytes": "REGRESSED", "latency_s": "UNCHANGED"}
    config = tmp_path / "regress.toml"
    config.write_text("[regress]\nflash_bytes = 0.25\n")
    assert main([*arguments, "--config", str(config)]) == 0
    assert _cli_verdicts(capsys.readouterr().out) == {"flash_bytes": "UNCHANGED", "latency_s": "UNCHANGED"}
    config.write_text("[regress]\nflash_bytes = 0.25\nalpha = 0.2\n")
    assert main([*arguments, "--config", str(config)]) == 1
    assert _cli_verdicts(capsys.readouterr().out) == {"flash_bytes": "UNCHANGED", "latency_s": "REGRESSED"}


def test_tool_warnings_list_each_changed_tool():
    """Changed tools are listed, sorted, old -> new; unchanged tools and tools new to the latest run are not."""
    before = {"vela": "5.2.0", "tensorflow": "2.21.0", "tflite_micro": "abc123"}
    after = {"vela": "5.3.0", "tensorflow": "2.22.0", "tflite_micro": "abc123", "scipy": "1.17.1"}
    _, warnings = compare(_samples({"flash_bytes": [1.0]}, tools=before), _samples({"flash_bytes": [1.0]}, tools=after))
    assert warnings == ["net on vela: tool versions differ (tensorflow 2.21.0 -> 2.22.0, vela 5.2.0 -> 5.3.0); "
                        "a change may come from the tools"]
    assert compare(_samples({"flash_bytes": [1.0]}, tools=before), _samples({"flash_bytes": [1.0]}, tools=before))[1] == []


def test_only_shared_candidates_and_metrics_are_compared():
    """A metric measured on one side only gets no verdict; runs on the same target with no candidate in
    common are refused."""
    verdicts, _ = compare(_samples({"flash_bytes": [1.0], "latency_s": [1e-3]}), _samples({"flash_bytes": [1.0]}))
    assert [v.metric for v in verdicts] == ["flash_bytes"]
    other = {("other", "vela"): _samples({"flash_bytes": [1.0]})[("net", "vela")]}
    with pytest.raises(UsageError, match="share no candidate"):
        compare(_samples({"flash_bytes": [1.0]}), other)


def test_baseline_file_round_trips_and_checks_its_format(tmp_path):
    """write_baseline then read_baseline gives back the same samples; a file of another format, not JSON,
    missing or not a JSON object is a one-line UsageError."""
    samples = {**_samples({"flash_bytes": [100.0, 101.0], "latency_s": [1e-3]}),
               **_samples({"accuracy_int8": [0.85]}, target="qemu-an547", settings={"cpu": "cortex-m55"})}
    path = write_baseline(samples, tmp_path / "nested" / "baseline.json")
    assert json.loads(path.read_text())["format"] == "udc-regress-baseline/1"
    assert read_baseline(path) == samples
    path.write_text(json.dumps({"format": "udc-regress-baseline/0", "entries": []}))
    with pytest.raises(UsageError, match="format 'udc-regress-baseline/0' is not udc-regress-baseline/1"):
        read_baseline(path)
    for text in ("not json", "[1, 2]"):
        path.write_text(text)
        with pytest.raises(UsageError, match="--update-baseline"):
            read_baseline(path)
    with pytest.raises(UsageError, match="not a readable baseline file"):
        read_baseline(tmp_path / "missing.json")


def test_junit_counts_every_regression_as_a_failure(tmp_path):
    """Two regressions, one improvement, one unchanged: 4 test cases, 2 failures, each on a regressed metric."""
    verdicts, _ = compare(
        _samples({"flash_bytes": [100.0], "sram_bytes": [10.0], "npu_cycles": [50.0], "total_cycles": [70.0]}),
        _samples({"flash_bytes": [101.0], "sram_bytes": [20.0], "npu_cycles": [40.0], "total_cycles": [70.0]}))
    suite = ElementTree.parse(junit_xml(verdicts, tmp_path / "j" / "regress.xml")).getroot()
    assert (suite.get("tests"), suite.get("failures")) == ("4", "2")
    failed = {case.get("name") for case in suite.iter("testcase") if case.find("failure") is not None}
    assert failed == {"flash_bytes", "sram_bytes"}
    assert all(case.find("system-out") is not None for case in suite.iter("testcase") if case.get("name") not in failed)
