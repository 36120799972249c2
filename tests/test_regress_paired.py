"""Verdicts a nightly board can trust: runs evaluated differently are refused, accuracy is judged on paired
predictions (McNemar), a board's latency over its timed windows, and each verdict names its commits;
the report's history marks change points."""

import json

import numpy as np
import pytest

from core.candidate import Candidate
from core.predictions import decode, encode
from harness.cli import main
from results.change_points import change_points
from results.paired import evaluation_difference, mcnemar_exact, paired_accuracy
from results.regress import compare, samples_from_rows
from results.store import Store


def _measure(directory, out, capsys, *options):
    assert main(["measure", "--candidate", str(directory), "--target", "vela", "--dataset", "synthetic", "--json",
                 "--out", str(out), *options]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _runs(out):
    with Store.for_output_dir(out) as store:
        return [run["id"] for run in store.runs()]


def _regress(out, capsys, baseline, candidate, *options):
    code = main(["regress", "--out", str(out), "--baseline", str(baseline), "--candidate", str(candidate), *options])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def flipped(candidate: Candidate, count: int) -> Candidate:
    """The candidate with the signs of ``count`` nonzero weights of its largest tensor flipped, same name."""
    weights = {key: value.copy() for key, value in candidate.weights.items()}
    largest = max((key for key in weights if not key.endswith(".bias")), key=lambda key: weights[key].size)
    flat = weights[largest].reshape(-1)
    flat[np.flatnonzero(flat)[:count]] *= -1
    return Candidate(candidate.spec, weights)


def test_runs_on_different_test_images_are_refused_in_one_line(hand_candidate, tmp_path, capsys):
    directory = hand_candidate.save(tmp_path / "candidate")
    _measure(directory, tmp_path / "out", capsys, "--eval-samples", "100")
    _measure(directory, tmp_path / "out", capsys, "--eval-samples", "200")
    first, second = _runs(tmp_path / "out")
    code, out, err = _regress(tmp_path / "out", capsys, first, second)
    assert code == 2 and out == ""
    assert err.strip() == (f"error: {hand_candidate.name} on vela: the evaluations differ (test images 100 vs 200); "
                           "compare runs evaluated on the same test images, or pass --allow-different-evaluation")
    code, out, err = _regress(tmp_path / "out", capsys, first, second, "--allow-different-evaluation")
    assert code in (0, 1) and "the evaluations differ (test images 100 vs 200); compared anyway" in err
    assert "McNemar" not in out  # predictions on other images are no pairs


def test_a_few_flipped_weights_are_judged_by_mcnemar_and_a_remeasurement_by_identical_predictions(
        hand_candidate, tmp_path, capsys):
    out = tmp_path / "out"
    _measure(hand_candidate.save(tmp_path / "a"), out, capsys)
    _measure(hand_candidate.save(tmp_path / "a"), out, capsys, "--force")
    row = _measure(flipped(hand_candidate, 40).save(tmp_path / "b"), out, capsys)
    assert row["accuracy_samples"] == 256
    first, again, changed = _runs(out)
    code, text, _ = _regress(out, capsys, first, again)
    line = next(line for line in text.splitlines() if "accuracy_int8" in line)
    assert "identical predictions on 256 images" in line and "UNCHANGED" in line and code == 0
    code, text, _ = _regress(out, capsys, first, changed)
    line = next(line for line in text.splitlines() if "accuracy_int8" in line)
    assert "McNemar exact on 256 paired images" in line
    cells = [cell.strip() for cell in line.strip("|").split("|")]
    p_value = float(cells[7])
    with Store.for_output_dir(out) as store:
        rows = {run: store.measurements(run)[0] for run in (first, changed)}
    paired = paired_accuracy(rows[first]["extra"]["predictions"], rows[changed]["extra"]["predictions"])
    assert not paired.identical and paired.worse + paired.better > 0
    assert p_value == pytest.approx(mcnemar_exact(paired.worse, paired.better), rel=1e-2)
    assert cells[-1] == f"{rows[first]['git_sha'][:10]}..{rows[changed]['git_sha'][:10]}"


def test_predictions_round_trip_and_mcnemar_counts_the_discordant_pairs():
    labels = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9] * 3)
    before = labels.copy()
    after = labels.copy()
    after[:10] = (after[:10] + 1) % 10  # 10 right before, wrong after
    before[20:22] = 0  # 2 wrong before (label 0 at 20 stays right), right after
    stored = encode(after, labels)
    classes, correct = decode(stored)
    assert classes.tolist() == after.tolist() and correct.tolist() == (after == labels).tolist()
    paired = paired_accuracy(encode(before, labels), stored)
    assert (paired.worse, paired.better, paired.samples) == (10, 1, 30)
    assert paired.p_value == pytest.approx(0.01171875)  # 2 * P(X <= 1), X ~ Binomial(11, 1/2)
    assert paired.change == pytest.approx(-9 / 30)
    assert paired_accuracy(stored, encode(after[:20], labels[:20])) is None  # not the same images
    assert decode({"format": "other"}) is None and decode({"format": "predictions/1", "count": 3}) is None


def test_an_evaluation_differs_in_its_dataset_count_selection_or_calibration():
    base = {"dataset": "fashion-mnist", "samples": 2000, "digest": "a", "calibration": "train-200-x"}
    assert evaluation_difference(base, dict(base)) is None
    assert evaluation_difference(base, {**base, "samples": 500}) == "test images 2000 vs 500"
    assert evaluation_difference(base, {**base, "dataset": "synthetic"}) == "dataset fashion-mnist vs synthetic"
    assert evaluation_difference(base, {**base, "digest": "b"}) == "the test image selection differs"
    assert evaluation_difference(base, {**base, "calibration": "noise-200-y"}) == "the int8 calibration differs"
    assert evaluation_difference(base, None) is None  # a row stored before evaluations were: not refused


def _entry(metrics, evaluations=None, predictions=(), windowed=False, sha="b" * 40):
    return {("net", "board"): {"metrics": metrics, "tool_versions": {}, "target_settings": {},
                               "evaluations": evaluations or [None], "predictions": list(predictions),
                               "windowed": windowed, "git_sha": sha}}


def test_the_runs_of_one_side_must_share_their_evaluation_too():
    evaluations = [{"dataset": "synthetic", "samples": 100}, {"dataset": "synthetic", "samples": 200}]
    with pytest.raises(Exception, match=r"among the candidate's runs: test images 100 vs 200"):
        compare(_entry({"flash_bytes": [1.0]}, evaluations[:1]), _entry({"flash_bytes": [1.0]}, evaluations))


def test_board_latency_is_tested_over_its_timed_windows_and_names_the_commits():
    rows = [{"status": "ok", "candidate_name": "net", "target": "board", "latency_s": 1.0, "git_sha": "c" * 40,
             "extra": {"latency_windows_s": [1.00, 1.01, 0.99, 1.00, 1.01]}}]
    grouped = samples_from_rows(rows)
    assert grouped[("net", "board")]["metrics"]["latency_s"] == [1.00, 1.01, 0.99, 1.00, 1.01]
    slower = _entry({"latency_s": [1.10, 1.11, 1.09, 1.12, 1.10]}, windowed=True, sha="d" * 40)
    verdicts, _ = compare(grouped, slower)
    [latency] = verdicts
    assert latency.verdict == "REGRESSED" and latency.how == "Mann-Whitney U over timed windows, alpha 0.05"
    assert latency.samples == (5, 5) and latency.p_value < 0.05 and latency.commits == "cccccccccc..dddddddddd"


def test_a_boards_timed_windows_run_on_one_input(hand_tflite, tmp_path):
    from targets.board import BoardTarget
    from targets.host_tflm import HostTFLM
    from tests.faulty_peer import FaultyPeer, PeerSession

    board = BoardTarget(port="/dev/ttyACM0")
    peer = FaultyPeer(hand_tflite)
    board._session, board._host = PeerSession(peer, 2.0), HostTFLM(hand_tflite)
    board._profile, board._memory = board._session.link.profile(), {"flash_bytes": 1, "flash_breakdown": {},
                                                                    "ram_bytes": 1}
    board._vela_npu_cycles = None
    peer.fault = "none"
    with pytest.raises(Exception, match="NPU counters"):  # the peer has no PMU: the corstone300 check speaks first
        board.counters()
    board.platform_counters = lambda inference: {"latency_s": inference.elapsed_us / 10 / 1e6}
    figures = board.counters()
    assert len(figures["latency_windows_s"]) == 5 and figures["latency_s"] == pytest.approx(1e-3)
    assert len(set(peer.inputs[-5:])) == 1
    board.close()


@pytest.mark.parametrize("values,deterministic,threshold,expected", [
    ([100, 100, 100, 120, 120, 120], True, 0.0, [3]),  # a step in Flash: once, at the step
    ([100, 100, 101, 101, 100], True, 0.02, []),  # within the tolerance
    ([1.00, 1.01, 0.99, 1.00, 1.01, 0.99, 1.00, 1.01], False, 0.02, []),  # noise
    ([1.00, 1.01, 0.99, 1.00, 1.01, 1.30, 1.31, 1.29, 1.30], False, 0.02, [5]),  # a 30% step, flagged once
    ([1.0, 1.5, 1.0, 1.0], False, 0.02, []),  # too few points before it to tell noise
    ([0.80, 0.80, 0.80, 0.75, 0.75], False, 0.005, [3]),  # a flat series: any move past the threshold
])
def test_change_points_are_found_by_a_lookback_window(values, deterministic, threshold, expected):
    assert change_points(values, deterministic, threshold) == expected


def test_the_history_lists_change_points_with_their_commits(tmp_path):
    import datetime as dt

    from results.report.history import history_section

    rows = [{"status": "ok", "candidate_name": "net", "target": "vela", "candidate_hash": "h",
             "created_at": dt.datetime(2026, 11, day, tzinfo=dt.timezone.utc), "git_sha": f"{day:02d}" * 20,
             "flash_bytes": 40000 if day < 5 else 42000, "accuracy_int8": 0.8} for day in range(1, 8)]
    text = "\n".join(history_section(rows, tmp_path))
    assert "### Change points" in text and (tmp_path / "history.png").is_file()
    [line] = [line for line in text.splitlines() if "0404040404..0505050505" in line]
    assert "Flash" in line and "39.06 → 41.02" in line
    rows = [{**row, "flash_bytes": 40000} for row in rows]
    assert "No change points" in "\n".join(history_section(rows, tmp_path))
