"""``write_report``: the report's sections, in order, into ``report.md`` beside its PNGs."""

from __future__ import annotations

from pathlib import Path

from results.report.cells import MISSING, strategy
from results.report.estimates import estimate_section
from results.report.history import history_section
from results.report.search_sections import search_section
from results.report.sections import accuracy_section, measurements_section, provenance_section, size_section


def write_report(rows: list[dict], out_dir: Path, title: str = "UDC harness report",
                 history: list[dict] | None = None) -> Path:
    """Write ``report.md`` and its PNGs into ``out_dir``; return the markdown's path. ``history``: measurements
    from other runs of the same candidates, for the history section (default: ``rows`` themselves)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ok = [r for r in rows if r.get("status") == "ok"]
    failed = [r for r in rows if r.get("status") != "ok"]
    targets = sorted({r.get("target") or MISSING for r in rows})
    strategies = sorted({strategy(r) for r in rows})
    lines = [f"# {title}", "",
             f"{len(rows)} measurements: {len(ok)} ok, {len(failed)} failed. "
             f"Targets: {', '.join(targets) or MISSING}. Strategies: {', '.join(strategies) or MISSING}.", ""]
    lines += accuracy_section(ok, out_dir)
    lines += search_section(ok, out_dir)
    lines += estimate_section(ok, out_dir)
    lines += history_section(rows if history is None else history, out_dir)
    lines += size_section(ok, out_dir)
    lines += measurements_section(ok, failed)
    lines += provenance_section(rows)
    path = out_dir / "report.md"
    path.write_text("\n".join(lines).rstrip("\n") + "\n", encoding="utf-8")
    return path
