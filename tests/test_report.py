"""Markdown + PNG report from measurement rows, and the Pareto front it draws."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from results.report import pareto_front, write_report
from results.schema import MEASUREMENT_COLUMNS
from results.store import Store

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def row(name, strategy, flash, acc, **overrides) -> dict:
    values = dict.fromkeys(MEASUREMENT_COLUMNS)
    values.update({
        "id": sum(map(ord, name)),
        "created_at": dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc),
        "candidate_hash": f"{name:0<64}"[:64],
        "candidate_name": name,
        "strategy": strategy,
        "target": "vela",
        "target_settings": {"accelerator": "ethos-u55-128"},
        "settings_key": "s1",
        "status": "ok",
        "flash_bytes": flash,
        "sram_bytes": 20_000,
        "encoded_weight_bytes": int(flash * 0.8) if flash else None,
        "original_weight_bytes": 80_000,
        "npu_cycles": 123_456,
        "total_cycles": 130_000,
        "latency_s": 0.00052,
        "latency_is_estimate": True,
        "accuracy_int8": acc,
        "accuracy_float": acc + 0.01 if acc is not None else None,
        "accuracy_samples": 1000,
        "tflm_arena_bytes": 30_000,
        "rhs_bound_bytes": flash * 0.7 if flash else None,
        "empirical_entropy_bytes": flash * 0.65 if flash else None,
        "coded_mask_bytes": flash * 0.72 if flash else None,
        "tool_versions": {"vela": "5.2.0", "python": "3.11.7"},
        "git_sha": "abc123",
        "host": "bench",
        "extra": {},
    })
    values.update(overrides)
    return values


# Hand-made: the front is cheap (smallest, low accuracy), mid and best; the others are dominated.
ROWS = [
    row("cheap", "udc", 20_000, 0.80),
    row("mid", "udc", 40_000, 0.88),
    row("mid-dominated", "dnas", 45_000, 0.86),    # more Flash, less accuracy than mid
    row("best", "random", 90_000, 0.91),
    row("big-worse", "random", 120_000, 0.90),     # dominated by best
    row("same-flash-worse", None, 40_000, 0.85),   # ties mid on Flash, loses on accuracy
    row("broken", "udc", None, None, status="failed", error="vela: operator | not supported\nsecond line",
        sram_bytes=None, npu_cycles=None),
]


def pareto_section(text: str, target: str = "vela") -> str:
    return subsection(text, f"Pareto front on {target} (max int8 accuracy, min Flash)")


def subsection(text: str, heading: str) -> str:
    return text.split(f"\n### {heading}\n", 1)[1].split("\n#", 1)[0]


def section(text: str, heading: str) -> str:
    return text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]


def test_pareto_front_hand_example():
    points = [(10, 0.5), (20, 0.7), (20, 0.6), (15, 0.4), (30, 0.7), (5, 0.3), (40, 0.9), (40, 0.9)]
    assert pareto_front(points) == [0, 1, 5, 6, 7]
    assert pareto_front([]) == []
    assert pareto_front([(1.0, float("nan")), (2.0, 0.5)]) == [1]
    assert pareto_front([(3, 1), (1, 1), (2, 1)]) == [1]


def test_report_writes_markdown_and_pngs(tmp_path):
    path = write_report(ROWS, tmp_path / "report")
    assert path == tmp_path / "report" / "report.md"
    text = path.read_text()
    for png in ("accuracy_vs_flash.png", "size_figures.png"):
        data = (tmp_path / "report" / png).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000, png
        assert f"]({png})" in text

    table = section(text, "Measurements")
    for r in ROWS[:-1]:
        assert f"| {r['candidate_name']} " in table
        assert r["candidate_hash"][:12] in table
    assert "broken" not in table
    assert "unknown" in table  # strategy None
    assert "0.520 (est.)" in table and "88.00" in table and "39.06" in table  # latency ms, acc %, flash KiB

    front = re.findall(r"^\| (\S+) ", pareto_section(text), flags=re.M)
    assert front[2:] == ["cheap", "mid", "best"]  # after the header and rule rows

    failed = section(text, "Failed")
    assert "broken" in failed and "operator \\| not supported second line" in failed
    provenance = section(text, "Provenance")
    assert "abc123" in provenance and "bench" in provenance and "5.2.0" in provenance
    assert "ethos-u55-128" in provenance


def test_report_is_deterministic(tmp_path):
    first = write_report(ROWS, tmp_path / "a").read_text()
    second = write_report(ROWS, tmp_path / "b").read_text()
    assert first == second


def test_rows_full_of_none_do_not_crash(tmp_path):
    empty = dict.fromkeys(MEASUREMENT_COLUMNS)
    byo = row("byo.tflite", None, 50_000, None, accuracy_float=None, accuracy_samples=None, latency_s=None,
              rhs_bound_bytes=None, tool_versions=None, target_settings=None, candidate_hash=None)
    rows = [dict(empty, status="ok"), dict(empty, status="failed"), byo, dict(empty)]
    text = write_report(rows, tmp_path).read_text()
    assert "accuracy plot skipped" in text
    assert not (tmp_path / "accuracy_vs_flash.png").exists()
    assert (tmp_path / "size_figures.png").read_bytes().startswith(PNG_SIGNATURE)
    assert "byo.tflite" in section(text, "Measurements") and "—" in text


def test_stale_accuracy_plot_is_not_left_behind(tmp_path):
    write_report(ROWS, tmp_path)
    assert (tmp_path / "accuracy_vs_flash.png").exists()
    write_report([row("no-acc", "udc", 10_000, None, accuracy_float=None)], tmp_path)
    assert not (tmp_path / "accuracy_vs_flash.png").exists()


def test_empty_report(tmp_path):
    text = write_report([], tmp_path).read_text()
    assert "0 measurements" in text and "No ok measurements." in text


def test_report_from_store_rows(tmp_path):
    with Store.for_output_dir(tmp_path) as store:
        run_id = store.start_run("measure", {}, {})
        for r in ROWS:
            store.add_measurement(run_id, {k: v for k, v in r.items() if k != "id"})
        rows = store.measurements(run_id)
    text = write_report(rows, tmp_path / "report", title="Run 1").read_text()
    assert text.startswith("# Run 1\n")
    front = re.findall(r"^\| (\S+) ", pareto_section(text), flags=re.M)
    assert front[2:] == ["cheap", "mid", "best"]


@pytest.mark.parametrize("accuracy_float", [None, 0.95])
def test_single_point(tmp_path, accuracy_float):
    path = write_report([row("solo", "udc", 30_000, 0.9, accuracy_float=accuracy_float)], tmp_path)
    assert "solo" in pareto_section(path.read_text())


def _searched_row(name, strategy, budget, accuracy, met=True, ablation=None):
    search = {"budget_bytes": budget, "size_bits": 7.5 * budget, "constraint_met": met, "constraint_met_argmax": met,
              "repair_moves": [] if met else ["b1_expand:bits 8->6"], "timings_s": {"search_s": 60.0, "finetune_s": 30.0},
              "weight_norm": {"before": 50.0, "after_qhat": 52.0, "after_plain": 71.0,
                              "trajectory_qhat": [[0, 50.0], [10, 52.0]], "trajectory_plain": [[0, 50.0], [10, 71.0]]},
              "decisions": {"stem": {"bits": 8, "nonzero": 1.0, "width": 1.0, "op": "conv"},
                            "b3_expand": {"bits": 4, "nonzero": 0.5, "width": 0.5, "op": "identity"},
                            "fc": {"bits": 6, "nonzero": 0.7, "width": 1.0, "op": "dense"}}}
    if ablation:
        search["ablation"] = {"table": "table3", "row": ablation, "rejection": True, "mc_samples": False,
                              "projection": True, "lambda_tuning": False}
    return {"status": "ok", "candidate_name": name, "candidate_hash": name * 4, "strategy": strategy, "target": "vela",
            "flash_bytes": 40000, "rhs_bound_bytes": 0.93 * budget, "accuracy_int8": accuracy,
            "extra": {"search": search}}


def test_report_compares_strategies_at_each_budget(tmp_path):
    rows = [_searched_row("udc-mbv2-24kB", "udc", 24000, 0.85), _searched_row("random-mbv2-24kB", "random", 24000, 0.80),
            _searched_row("table3-projection-mbv2-24kB", "udc", 24000, 0.90, met=False, ablation="projection"),
            {"status": "ok", "candidate_name": "uniform-mbv2-b4-s50", "candidate_hash": "u" * 16, "strategy": "uniform",
             "target": "vela", "flash_bytes": 48000, "rhs_bound_bytes": 30000, "accuracy_int8": 0.87},
            {"status": "ok", "candidate_name": "uniform-mbv2-b8-s100", "candidate_hash": "v" * 16, "strategy": "uniform",
             "target": "vela", "flash_bytes": 95000, "rhs_bound_bytes": 81000, "accuracy_int8": 0.89}]
    text = write_report(rows, tmp_path).read_text()
    searches = text.split("## Searches under a budget")[1].split("### Strategies at each budget")[0]
    assert "udc-mbv2-24kB" in searches and "Q-hat 52, Q 71" in searches
    at_budget = text.split("### Strategies at each budget")[1].split("###")[0]
    lines = [line for line in at_budget.splitlines() if line.split("|")[1:2] and line.split("|")[1].strip() == "size_bound=24000"]
    # the ablation row is not the udc strategy's; a size bound is no Flash budget, so no uniform pair is chosen
    assert [line.split("|")[2].strip() for line in lines] == ["udc", "random"]
    assert [line.split("|")[6].strip() for line in lines] == ["85.00", "80.00"]  # one seed: no interval, no test
    assert "![Weight norm](weight_norm.png)" in text and (tmp_path / "weight_norm.png").stat().st_size > 1000
    assert "![Per-layer decisions](decisions.png)" in text and (tmp_path / "decisions.png").stat().st_size > 1000
    ablation = text.split("### Ablation (the UDC paper's Table 3)")[1]
    assert "| projection" in ablation and "NO" in ablation


def _flash_row(name, strategy, seed, accuracy, flash, met=True):
    search = {"budgets": {"flash": 40960.0}, "budget_flash_bytes": 40960.0, "seed": seed, "constraint_met": True,
              "constraint_met_measured": met, "measured": {"flash": flash}, "flash_bytes_predicted": flash * 1.01}
    return {"status": "ok", "candidate_name": f"{name}-seed{seed}", "candidate_hash": f"{name}{seed}" * 4,
            "strategy": strategy, "target": "vela", "flash_bytes": flash, "accuracy_int8": accuracy,
            "extra": {"search": search, "flash_predicted_bytes": flash * 1.01}}


def _uniform_row(pair, seed, accuracy, flash):
    return {"status": "ok", "candidate_name": f"uniform-mbv2-{pair}-seed{seed}", "candidate_hash": f"{pair}{seed}" * 8,
            "strategy": "uniform", "target": "vela", "flash_bytes": flash, "accuracy_int8": accuracy,
            "extra": {"search": {"seed": seed}}}


def test_strategies_over_seeds_give_intervals_and_paired_tests(tmp_path):
    from scipy.stats import t, ttest_rel

    udc, random = [0.85, 0.86, 0.88], [0.80, 0.83, 0.82]
    rows = [_flash_row("udc-mbv2-flash40.96kB", "udc", seed, a, 40000) for seed, a in enumerate(udc)]
    rows += [_flash_row("random-mbv2-flash40.96kB", "random", seed, a, 39000) for seed, a in enumerate(random)]
    # b4-s50 fits on every seed; b8-s100 is more accurate but over; b2-s100 fits but is less accurate;
    # b4-s100 fits on two seeds of three, so it does not fit
    rows += [_uniform_row("b4-s50", seed, a, 38000) for seed, a in enumerate([0.84, 0.84, 0.85])]
    rows += [_uniform_row("b8-s100", seed, a, 90000) for seed, a in enumerate([0.90, 0.90, 0.90])]
    rows += [_uniform_row("b2-s100", seed, a, 30000) for seed, a in enumerate([0.70, 0.71, 0.72])]
    rows += [_uniform_row("b4-s100", seed, 0.89, flash) for seed, flash in enumerate([40000, 40000, 41000])]
    text = write_report(rows, tmp_path).read_text()
    at_budget = text.split("### Strategies at each budget")[1].split("###")[0]
    lines = {line.split("|")[2].strip(): [cell.strip() for cell in line.split("|")[1:-1]]
             for line in at_budget.splitlines() if line.startswith("| flash=40960")}
    assert list(lines) == ["udc", "random", "uniform-mbv2-b4-s50"]
    mean, spread = sum(udc) / 3 * 100, (sum((a * 100 - sum(udc) / 3 * 100) ** 2 for a in udc) / 2) ** 0.5
    assert lines["udc"][5] == f"{mean:.2f} ± {t.ppf(0.975, 2) * spread / 3 ** 0.5:.2f}" and lines["udc"][2] == "3"
    assert lines["random"][6] == f"{ttest_rel(udc, random).pvalue:.3g}"
    assert lines["uniform-mbv2-b4-s50"][6] == f"{ttest_rel(udc, [0.84, 0.84, 0.85]).pvalue:.3g}"
    assert lines["udc"][4] == "3/3" and lines["uniform-mbv2-b4-s50"][4] == "fits"
    flash = text.split("### Flash model against Vela")[1].split("###")[0]
    assert "Worst case: +1.00%" in flash


def test_html_report_is_self_contained(tmp_path):
    from results.report import write_html

    rows = [_searched_row("udc-mbv2-24kB", "udc", 24000, 0.85)]
    page = write_html(write_report(rows, tmp_path)).read_text()
    assert page.startswith("<!DOCTYPE html>") and "<h2>Searches under a budget</h2>" in page
    assert page.count('src="data:image/png;base64,') >= 3 and "src=\"accuracy" not in page
    assert "<td style=\"text-align:right\">85.00</td>" in page and "<th>candidate</th>" in page


def test_many_candidates_plot_a_sample_and_the_table_keeps_all(tmp_path):
    rows = [{"status": "ok", "candidate_name": f"c{i}", "candidate_hash": f"{i:016d}", "strategy": "uniform",
             "target": "vela", "flash_bytes": 20000 + 100 * i, "rhs_bound_bytes": 10000 + 50 * i,
             "accuracy_int8": 0.5 + i / 200} for i in range(60)]
    text = write_report(rows, tmp_path).read_text()
    assert "40 of 60 candidates, evenly spaced in Flash" in text
    measurements = text.split("## Measurements")[1]
    assert all(f"| c{i} " in measurements for i in range(60))


def test_labels_of_a_dense_cluster_do_not_overlap():
    from matplotlib.text import Text

    from results.report.figures import new_figure, place_labels

    figure = new_figure(8.0, 5.5)
    ax = figure.add_subplot()
    points = [(33 + 0.6 * i, 84 + 0.3 * (i % 3), f"candidate-number-{i}") for i in range(8)]  # within ~5 KiB, 1 point
    ax.scatter([p[0] for p in points], [p[1] for p in points])
    ax.set_xlim(0, 100)
    ax.set_ylim(40, 95)
    place_labels(ax, points, fontsize=7)
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    boxes = [Text.get_window_extent(text, renderer) for text in ax.texts]  # the text alone, not its leader line
    assert len(boxes) == 8
    overlapping = [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:] if a.overlaps(b)]
    assert overlapping == []
