"""The report's views across strategies, targets and runs: each strategy's Pareto front, per-layer decisions,
Vela's estimates against device measurements, a metric's history, and the HTML page with all of them."""

from __future__ import annotations

import datetime as dt
import re

from harness.cli import main
from results.report import write_html, write_report
from results.store import Store
from tests.test_report import PNG_SIGNATURE, ROWS, _searched_row, pareto_section, row, section, subsection

UTC = dt.timezone.utc


def cells(table: str) -> list[list[str]]:
    """The body rows of a markdown table, cell by cell."""
    return [[c.strip() for c in line.split("|")[1:-1]] for line in table.splitlines()[2:] if line.startswith("| ")]


def test_each_strategy_gets_its_own_front(tmp_path):
    text = write_report(ROWS, tmp_path).read_text()
    fronts = {r[0]: r[1:] for r in cells(subsection(text, "Pareto front per strategy on vela").strip())}
    assert set(fronts) == {"dnas", "random", "udc", "unknown"}
    # 'mid-dominated' is dominated overall but is the dnas strategy's whole front.
    assert fronts["dnas"] == ["1", "mid-dominated (43.95: 86.00)"]
    assert fronts["udc"] == ["2", "cheap (19.53: 80.00), mid (39.06: 88.00)"]
    assert fronts["random"] == ["1", "best (87.89: 91.00)"]


def test_per_layer_decisions_table_marks_skipped_blocks(tmp_path):
    rows = [_searched_row("udc-mbv2-24kB", "udc", 24000, 0.85), _searched_row("random-mbv2-24kB", "random", 24000, 0.80)]
    text = write_report(rows, tmp_path).read_text()
    decisions = text.split("### Per-layer decisions")[1].split("###")[0]
    assert re.search(r"\| layer +\| udc-mbv2-24kB +\| random-mbv2-24kB", decisions)  # most accurate first
    assert re.search(r"\| b3_expand +\| skip +\| skip", decisions)
    assert re.search(r"\| fc +\| b6 s0.7 w1 ", decisions)


def _device_rows():
    tools = {"target_settings": {"accelerator": "ethos-u55-128"}}
    return [
        row("net-a", "udc", 40_000, 0.85, candidate_hash="a" * 64, npu_cycles=100_000, **tools),
        row("net-a", "udc", 300_000, 0.85, candidate_hash="a" * 64, target="corstone300", npu_cycles=120_600,
            latency_is_estimate=False, extra={"vela_npu_cycles": 100_500}, **tools),
        row("net-b", "uniform", 50_000, 0.80, candidate_hash="b" * 64, npu_cycles=90_000, **tools),
        row("net-b", "uniform", 200_000, 0.80, candidate_hash="b" * 64, target="qemu-an547", npu_cycles=None,
            target_settings={}),
        row("net-c", "uniform", 60_000, 0.82, candidate_hash="c" * 64),  # Vela only: nothing to compare
    ]


def test_vela_estimates_beside_device_measurements(tmp_path):
    text = write_report(_device_rows(), tmp_path).read_text()
    table = section(text, "Estimate vs measurement")
    rows = cells(table.strip().split("\n\n")[1])
    # corstone300 is judged against Vela's estimate for the model it ran, its ELF against the vela target's Flash;
    # qemu-an547 has no NPU: Flash only.
    assert rows == [["net-a", "corstone300", "100,500", "120,600", "1.20x", "39.06", "292.97", "7.50x"],
                    ["net-b", "qemu-an547", "90,000", "—", "—", "48.83", "195.31", "4.00x"]]
    assert (tmp_path / "estimate_vs_measured.png").read_bytes().startswith(PNG_SIGNATURE)
    text = write_report(_device_rows()[-1:], tmp_path).read_text()
    assert "Estimate vs measurement" not in text and not (tmp_path / "estimate_vs_measured.png").exists()


def test_targets_get_their_own_accuracy_plot_and_front(tmp_path):
    """A linked image's Flash is not Vela's: the firmware targets never share an axis or a front with vela."""
    text = write_report(_device_rows(), tmp_path).read_text()
    fronts = {target: re.findall(r"^\| (net-\S+) ", pareto_section(text, target), flags=re.M)
              for target in ("vela", "corstone300", "qemu-an547")}
    # On vela net-c (60 kB, 82%) is dominated by net-a (40 kB, 85%); the devices' 200-300 kB images would
    # otherwise have been dominated by every vela row.
    assert fronts == {"vela": ["net-a"], "corstone300": ["net-a"], "qemu-an547": ["net-b"]}
    for name in ("accuracy_vs_flash.png", "accuracy_vs_flash-corstone300.png", "accuracy_vs_flash-qemu-an547.png"):
        assert (tmp_path / name).read_bytes().startswith(PNG_SIGNATURE)
    write_report([r for r in _device_rows() if r["target"] == "vela"], tmp_path)
    assert sorted(p.name for p in tmp_path.glob("accuracy_vs_flash*.png")) == ["accuracy_vs_flash.png"]


def test_history_follows_a_candidate_over_runs(tmp_path):
    # nights 1-2 measure one model; on night 3 a new search made another under the same name
    history = [row("net-a", "udc", 40_000 + 100 * day, 0.88 - 0.01 * day, id=day,
                   created_at=dt.datetime(2026, 3, 1 + day, 1, 30, tzinfo=UTC),
                   candidate_hash=("a" if day < 2 else "b") * 64) for day in range(3)]
    history.append(row("net-b", "udc", 50_000, 0.8))  # measured once: no line
    text = write_report(history[2:3], tmp_path, history=history).read_text()
    table, changes = section(text, "History").split("### Change points")
    (line,) = [line for line in table.splitlines() if "| net-" in line]
    # Flash compares exactly: each night's new figure is a change point, named with its commits
    assert [line.split("|")[3].strip() for line in changes.splitlines() if "| net-a" in line] == ["Flash (KiB)"] * 2
    cells = [c.strip() for c in line.split("|")[1:-1]]
    assert cells[:6] == ["net-a", "vela", "3", "2", "2026-03-01 01:30", "2026-03-03 01:30"]
    assert cells[6] == "88 → 86" and cells[7] == "39.06 → 39.26"
    assert (tmp_path / "history.png").read_bytes().startswith(PNG_SIGNATURE)
    assert "## History" not in write_report(history[2:3], tmp_path).read_text()
    assert not (tmp_path / "history.png").exists()


def test_report_command_writes_html_with_history_from_earlier_runs(tmp_path, capsys):
    with Store.for_output_dir(tmp_path) as store:
        for night, accuracy in enumerate((0.88, 0.86)):
            run = store.start_run("run", {}, {})
            for record in _device_rows():
                record = {k: v for k, v in record.items() if k != "id"}
                store.add_measurement(run, {**record, "accuracy_int8": accuracy,
                                            "created_at": dt.datetime(2026, 3, 1 + night, tzinfo=UTC)})
            store.finish_run(run, "ok")
    assert main(["report", "--out", str(tmp_path), "--html"]) == 0
    markdown, page = capsys.readouterr().out.split()
    assert markdown.endswith("run-2/report.md") and page.endswith("run-2/report.html")
    text = open(markdown).read()
    assert "## History" in text and "| net-a " in section(text, "History") and "88 → 86" in section(text, "History")
    html = open(page).read()
    for heading in ("Accuracy vs Flash", "Estimate vs measurement", "History", "Size figures"):
        assert f"<h2>{heading}</h2>" in html
    assert "<h3>Pareto front per strategy on vela</h3>" in html
    images = re.findall(r'<img [^>]*src="([^"]*)"', html)
    assert len(images) >= 4 and all(src.startswith("data:image/png;base64,") and len(src) > 2000 for src in images)


def test_html_of_a_report_without_plots(tmp_path):
    page = write_html(write_report([], tmp_path)).read_text()
    assert "<img" not in page and "No ok measurements." in page
