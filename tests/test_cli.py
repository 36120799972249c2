"""The command line as a user meets it: JSON output, the cache, and one clear line per bad input."""

import json
from pathlib import Path

import numpy as np
import pytest

from core.errors import UsageError
from harness.cli import main
from tests.candidates import make_candidate
from tests.test_run import TINY_UDC

JSON_KEYS = {"candidate", "target", "flash_bytes", "sram_bytes", "encoded_weight_bytes", "original_weight_bytes",
             "npu_cycles", "latency_s", "rhs_bound_bytes", "empirical_entropy_bytes", "coded_mask_bytes",
             "accuracy_int8", "tflm_arena_bytes", "tool_versions"}


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_measure_tflite_json_then_cache_hit(capsys, tmp_path, hand_tflite_file):
    out = tmp_path / "out"
    code, stdout, _ = run_cli(capsys, "measure", "--tflite", hand_tflite_file, "--target", "vela", "--json", "--out", out)
    assert code == 0
    record = json.loads(stdout.strip())
    assert JSON_KEYS <= record.keys()
    assert record["candidate"] == "hand" and record["target"] == "vela" and record["cached"] is False
    assert record["flash_bytes"] > 0 and record["accuracy_int8"] is None  # no dataset given
    assert record["tool_versions"]["vela"]
    code, stdout, _ = run_cli(capsys, "measure", "--tflite", hand_tflite_file, "--json", "--out", out)
    again = json.loads(stdout.strip())
    assert code == 0 and again["cached"] is True and again["flash_bytes"] == record["flash_bytes"]
    code, stdout, _ = run_cli(capsys, "measure", "--tflite", hand_tflite_file, "--json", "--out", out, "--force")
    assert json.loads(stdout.strip())["cached"] is False


def test_measure_candidate_with_synthetic_accuracy_and_report(capsys, tmp_path):
    candidate_dir = make_candidate(bits=2, nonzero=0.2).save(tmp_path / "cand")
    out = tmp_path / "out"
    code, stdout, _ = run_cli(capsys, "measure", "--candidate", candidate_dir, "--dataset", "synthetic",
                              "--eval-samples", "50", "--json", "--out", out)
    assert code == 0
    record = json.loads(stdout.strip())
    assert record["accuracy_samples"] == 50 and 0 <= record["accuracy_int8"] <= 1
    assert record["rhs_bound_bytes"] > record["empirical_entropy_bytes"] > 0
    code, stdout, _ = run_cli(capsys, "report", "--out", out)
    assert code == 0
    report = (out / "reports").glob("run-*/report.md")
    assert any("hand-b2-s20" in path.read_text() for path in report)


def _assert_one_line_error(code, stderr, expected_code, *fragments):
    assert code == expected_code
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in stderr


def test_missing_file(capsys, tmp_path):
    code, _, err = run_cli(capsys, "measure", "--tflite", tmp_path / "nope.tflite", "--out", tmp_path / "o")
    _assert_one_line_error(code, err, 2, "nope.tflite", "no such file")


def test_not_a_tflite_file(capsys, tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"this is a text file, not a flatbuffer")
    code, _, err = run_cli(capsys, "measure", "--tflite", path, "--out", tmp_path / "o")
    _assert_one_line_error(code, err, 2, "not a TFLite flatbuffer")


def test_truncated_tflite(capsys, tmp_path, hand_tflite):
    path = tmp_path / "cut.tflite"
    path.write_bytes(hand_tflite[: len(hand_tflite) // 3])
    code, _, err = run_cli(capsys, "measure", "--tflite", path, "--out", tmp_path / "o")
    _assert_one_line_error(code, err, 2, "truncated or corrupt")


def test_float_tflite(capsys, tmp_path, hand_candidate):
    import tensorflow as tf

    from harness.export import build_keras

    path = tmp_path / "float.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(build_keras(hand_candidate)).convert())
    code, _, err = run_cli(capsys, "measure", "--tflite", path, "--out", tmp_path / "o")
    _assert_one_line_error(code, err, 2, "FLOAT32", "not int8", "full-integer")


def test_unknown_target_and_accelerator(capsys, tmp_path, hand_tflite_file):
    code, _, err = run_cli(capsys, "measure", "--tflite", hand_tflite_file, "--target", "tpu", "--out", tmp_path / "o")
    _assert_one_line_error(code, err, 2, "unknown target 'tpu'", "vela")
    code, _, err = run_cli(capsys, "measure", "--tflite", hand_tflite_file, "--accelerator", "ethos-u55-100",
                           "--out", tmp_path / "o")
    _assert_one_line_error(code, err, 2, "unknown accelerator config", "ethos-u55-128")


def test_malformed_candidate(capsys, tmp_path):
    candidate = make_candidate()
    candidate.spec["layers"][0]["nonzero"] = 1.5
    directory = tmp_path / "bad"
    directory.mkdir()
    (directory / "spec.json").write_text(json.dumps(candidate.spec))
    np.savez(directory / "weights.npz", **candidate.weights)
    code, _, err = run_cli(capsys, "measure", "--candidate", directory, "--out", tmp_path / "o")
    _assert_one_line_error(code, err, 2, "nonzero=1.5")


def test_bits_not_deployable_is_a_failed_measurement_that_is_stored(capsys, tmp_path):
    candidate = make_candidate()
    candidate.spec["layers"][0]["bits"] = 16
    directory = candidate.save(tmp_path / "wide")
    out = tmp_path / "out"
    code, stdout, err = run_cli(capsys, "measure", "--candidate", directory, "--json", "--out", out)
    assert code == 1
    record = json.loads(stdout.strip())
    assert record["status"] == "failed" and "bits=16" in record["error"]
    from results.store import Store

    with Store.for_output_dir(out) as store:
        assert [row["status"] for row in store.measurements()] == ["failed"]


def test_missing_dataset_path(capsys, tmp_path, hand_tflite_file):
    code, _, err = run_cli(capsys, "measure", "--tflite", hand_tflite_file, "--dataset", "fashion-mnist",
                           "--data-path", tmp_path / "empty", "--out", tmp_path / "o")
    _assert_one_line_error(code, err, 2, "Fashion-MNIST not found", "apt-get install dataset-fashion-mnist", "--data-path")
    code, _, err = run_cli(capsys, "measure", "--tflite", hand_tflite_file, "--dataset", "cifar10", "--out", tmp_path / "o")
    _assert_one_line_error(code, err, 2, "cifar10 needs a path", "--data-path")


def test_output_directory_not_writable(capsys, tmp_path, hand_tflite_file):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a directory should be")
    code, _, err = run_cli(capsys, "measure", "--tflite", hand_tflite_file, "--out", blocker / "out")
    _assert_one_line_error(code, err, 2, "is not writable", "--out")


def test_existing_measurements_survive_a_bad_input(capsys, tmp_path, hand_tflite_file):
    out = tmp_path / "out"
    assert run_cli(capsys, "measure", "--tflite", hand_tflite_file, "--out", out)[0] == 0
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"TFL")
    assert run_cli(capsys, "measure", "--tflite", bad, "--out", out)[0] == 2
    from results.store import Store

    with Store.for_output_dir(out) as store:
        assert len(store.measurements()) == 1


def test_unknown_flag_and_bad_config(capsys, tmp_path):
    code, _, err = run_cli(capsys, "measure", "--bogus")
    _assert_one_line_error(code, err, 2, "--bogus")
    config = tmp_path / "cfg.toml"
    config.write_text("[search]\nbitz = [4]\n")
    code, _, err = run_cli(capsys, "run", "--config", config, "--out", tmp_path / "o")
    _assert_one_line_error(code, err, 2, "unknown key search.bitz")


@pytest.mark.parametrize("command,job", [(["search", "--budget", "size_bound=30KB"], "harness.search_job.search_job"),
                                         (["run"], "harness.run.run_job")])
def test_random_protocol_flag_reaches_the_search_settings(capsys, tmp_path, monkeypatch, command, job):
    """--random-protocol sets [udc] random_protocol for run and search (the job is stopped before it trains)."""
    seen = []

    def stop(config, *args, **kwargs):
        seen.append(config["udc"]["random_protocol"])
        raise UsageError("stopped before training")

    monkeypatch.setattr(job, stop)
    for flag, protocol in (([], "shared"), (["--random-protocol", "paper"], "paper")):
        code, _, err = run_cli(capsys, *command, "--dataset", "synthetic", *flag, "--out", tmp_path / "out")
        assert code == 2 and "stopped before training" in err
        assert seen.pop() == protocol
    code, _, err = run_cli(capsys, *command, "--random-protocol", "full", "--out", tmp_path / "out")
    _assert_one_line_error(code, err, 2, "invalid choice: 'full'")
    config = tmp_path / "c.toml"
    config.write_text('[udc]\nrandom_protocol = "full"\n')
    code, _, err = run_cli(capsys, *command, "--config", config, "--out", tmp_path / "out")
    _assert_one_line_error(code, err, 2, "random_protocol must be one of shared, paper, got 'full'")


def test_tables_table2_writes_markdown_and_csv(capsys, tmp_path):
    code, stdout, _ = run_cli(capsys, "tables", "--only", "table2", "--seeds", "2", "--out", tmp_path)
    assert code == 0
    assert "| 0.66 |" in stdout and "(paper 0.04)" in stdout and "over 2 seeds" in stdout
    rows = (tmp_path / "tables" / "table2.csv").read_text().splitlines()
    assert rows[0] == "tau,setting,xi,vartheta,L_E,paper,L_E_sd,L_E_seeds" and len(rows) == 9
    assert len(rows[1].split(",")[-1].split()) == 2  # both seeds' values
    assert (tmp_path / "tables" / "table2.md").read_text().strip() == stdout.strip()
    code, _, err = run_cli(capsys, "tables", "--only", "table2", "--seeds", "0", "--out", tmp_path)
    _assert_one_line_error(code, err, 2, "--seeds must be at least 1")


def test_search_writes_searched_and_deployed_candidates_under_budget(capsys, tmp_path):
    config = tmp_path / "udc.toml"
    config.write_text(TINY_UDC)
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(capsys, "search", "--config", config, "--budget", "size_bound=30KB", "--dataset",
                                   "synthetic", "--out", out, "--quiet")
    assert code == 0, stderr
    assert "udc-mbv2-30kB: " in stdout and "B size bound predicted of 30,000 B size bound, constraint met" in stdout
    deployed = json.loads((out / "search" / "udc-mbv2-30kB" / "deployed" / "spec.json").read_text())
    assert deployed["meta"]["constraint_met"] and deployed["meta"]["size_bits"] <= 8 * 30000
    searched = json.loads((out / "search" / "udc-mbv2-30kB" / "searched" / "spec.json").read_text())
    assert searched["meta"]["stage"] == "searched"
    assert [layer.get("bits") for layer in searched["layers"]] == [layer.get("bits") for layer in deployed["layers"]]
    assert list((out / "cache").glob("pretrain-udc-*.pt"))  # a second search starts from the cached pretraining


def test_a_search_over_its_budget_exits_1_and_says_what_to_change(capsys, tmp_path):
    """A search too short to move pi, with the repair off: written, marked, exit 1, and the advice names the
    repair only because it is off."""
    config = tmp_path / "udc.toml"
    config.write_text(TINY_UDC.replace("warmup_steps = 16", "warmup_steps = 0").replace("search_steps = 96",
                                                                                       "search_steps = 2")
                      + "pi_lr = 1e-6\nrepair = false\n")
    code, stdout, stderr = run_cli(capsys, "search", "--config", config, "--budget", "size_bound=20KB", "--dataset",
                                   "synthetic", "--out", tmp_path / "out", "--quiet")
    assert code == 1 and "constraint NOT MET" in stdout
    assert stderr.strip().splitlines()[-1] == ("error: udc-mbv2-20kB is over its budget (written, marked "
                                               "constraint_met=false); raise the budget or enable udc.repair")


@pytest.mark.parametrize("strategy", ["udc", "random"])
def test_a_flash_budget_is_the_flash_vela_measures(capsys, tmp_path, strategy):
    """The done-when of measured budgets: the deployed candidate of a Flash-budget search measures at or under
    the budget on the vela target, whatever finetuning did to its weights."""
    config = tmp_path / "udc.toml"
    config.write_text(TINY_UDC + "random_trials = 2\nvalidation_images = 128\n")
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(capsys, "search", "--config", config, "--budget", "flash=30KiB", "--dataset",
                                   "synthetic", "--strategy", strategy, "--out", out, "--quiet")
    assert code == 0, stderr
    name = f"{strategy}-mbv2-flash30.72kB"
    assert f"{name}: " in stdout and "B Flash measured of 30,720 B Flash, constraint met" in stdout
    meta = json.loads((out / "search" / name / "deployed" / "spec.json").read_text())["meta"]
    assert meta["constraint_met_measured"] and meta["measured"]["flash"] <= 30720
    assert meta["flash_model"]["samples"] == 8 and meta["flash_model"]["worst_error"] < 0.02
    code, stdout, stderr = run_cli(capsys, "measure", "--candidate", out / "search" / name / "deployed", "--target",
                                   "vela", "--dataset", "synthetic", "--out", out, "--json")
    assert code == 0, stderr
    row = json.loads(stdout)
    row = row[0] if isinstance(row, list) else row
    assert row["flash_bytes"] == meta["measured"]["flash"] <= 30720
    assert abs(row["flash_predicted_bytes"] - row["flash_bytes"]) <= 0.02 * row["flash_bytes"]


def test_measure_refuses_a_dataset_the_candidate_does_not_fit(capsys, tmp_path):
    candidate_dir = make_candidate(bits=4, nonzero=0.5, input_shape=(32, 32, 3)).save(tmp_path / "cand")
    code, _, stderr = run_cli(capsys, "measure", "--candidate", candidate_dir, "--dataset", "synthetic",
                              "--out", tmp_path / "out")
    assert code == 2
    assert "takes 32x32x3 images in 10 classes, but synthetic has 28x28x1 in 10; pass the dataset" in stderr


@pytest.mark.parametrize("arguments,config,message", [
    (["--budget", "size_bound=100"], "", "below the smallest configuration of the mbv2 space, 448 bytes"),
    (["--budget", "flush=1KB"], "", "budget 'flush=1KB': unknown kind 'flush'; write it as one of flash=32KiB"),
    (["--budget", "flash=1KB,flash=2KB"], "", "names flash twice"),
    (["--budget", "npu_cycles=5000"], "", "a search needs a Flash, size_bound or MAC budget to search under"),
    (["--budget", "macs=12x"], "", "macs='12x' is not a positive count"),
    (["--budget", "24XB"], "", "budget '24XB' is not a positive size"),
    (["--budget=-5KB"], "", "is not a positive size"),
    (["--budget", "0KB"], "", "is not a positive size"),
    ([], "", "give a budget: --budget flash=32KiB"),
    (["--mac-budget", "0"], "", "--mac-budget 0 is not a positive MAC count"),
    (["--macs", "2000000"], "", "search takes its MAC budget as --mac-budget N"),
    (["--budget", "size_bound=24KB"], "[udc]\nlamda = 3\n", "[udc] unknown search setting(s) lamda"),
    (["--budget", "size_bound=24KB"], "[udc]\ntau = [0.1, 0.66]\n", "tau must anneal downwards"),
    (["--budget", "size_bound=24KB"], "[udc]\nstage_fractions = [0.5, 0.6, 0.2]\n", "stage_fractions are three"),
    (["--budget", "size_bound=24KB", "--processes", "3"], "", "--processes 3 must divide the MC samples"),
])
def test_search_bad_input_is_one_line_and_exit_2(capsys, tmp_path, arguments, config, message):
    config_file = tmp_path / "c.toml"
    config_file.write_text(config)
    code, stdout, stderr = run_cli(capsys, "search", "--config", config_file, "--dataset", "synthetic", *arguments,
                                   "--out", tmp_path / "out")
    assert code == 2, stderr
    assert message in stderr and len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "search").exists()


def test_report_since_a_date_writes_html(capsys, tmp_path):
    from tests.test_regress import _store_runs

    out = tmp_path / "out"
    _store_runs(out, [[1000], [1200]])
    code, stdout, _ = run_cli(capsys, "report", "--out", out, "--since", "2000-01-01", "--html")
    assert code == 0
    markdown, page = (Path(line) for line in stdout.split())
    assert markdown.name == "report.md" and page.name == "report.html" and page.read_text().count("<tr>") >= 2
    code, _, stderr = run_cli(capsys, "report", "--out", out, "--since", "2999-01-01")
    assert code == 2 and "no measurements since 2999-01-01" in stderr
    code, _, stderr = run_cli(capsys, "report", "--out", out, "--since", "yesterday")
    assert code == 2 and "is not a date" in stderr


def test_measure_calibrates_with_the_configs_sample_count(capsys, tmp_path, hand_candidate):
    """`measure --config` honours [measure] calibration_samples: the exported model is named by it."""
    hand_candidate.save(tmp_path / "hand")
    config = tmp_path / "cfg.toml"
    config.write_text("[measure]\ncalibration_samples = 7\n")
    code, _, _ = run_cli(capsys, "measure", "--candidate", tmp_path / "hand", "--config", config, "--json",
                         "--out", tmp_path / "out")
    assert code == 0
    exported = [p.name for p in (tmp_path / "out" / "artifacts").rglob("model_int8-*.tflite")]
    assert len(exported) == 1 and exported[0].startswith("model_int8-noise-7-")
