"""``regress``: runs compared metric by metric; exit 1 on any regression."""

from __future__ import annotations

import sys
from pathlib import Path

from core.errors import UsageError
from harness.commands.common import common_options, open_store, output_dir


def add_parser(commands) -> None:
    parser = commands.add_parser("regress", help="compare runs metric by metric; exit 1 on any regression")
    common_options(parser)
    parser.add_argument("--baseline", help="run id(s), e.g. 12 or 12,13,14, or a baseline file from --update-baseline")
    parser.add_argument("--candidate", help="run id(s) to judge (default: the latest run)")
    parser.add_argument("--junit", type=Path, help="also write the verdicts as JUnit XML")
    parser.add_argument("--update-baseline", type=Path, metavar="FILE",
                        help="write the candidate runs' samples to FILE as the new baseline (no comparison)")
    parser.add_argument("--allow-different-evaluation", action="store_true",
                        help="compare runs evaluated on different test images or calibrations (a warning, not a refusal)")
    parser.add_argument("--config", type=Path, help="TOML config; [regress] sets thresholds per metric and alpha")


def main(args) -> int:
    from harness.config import load_config
    from results.regress import HEADERS, compare, junit_xml, read_baseline, samples_from_rows, write_baseline
    from results.report import markdown_table

    settings = load_config(args.config)["regress"]
    alpha = settings.pop("alpha")
    out_dir = output_dir(args)
    with open_store(args, out_dir) as store:
        latest = samples_from_rows(_rows_of_runs(store, args.candidate, "--candidate"))
        if args.update_baseline:
            print(f"baseline written: {write_baseline(latest, args.update_baseline)}")
            return 0
        if not args.baseline:
            raise UsageError("give --baseline RUN[,RUN...] or a baseline file (or --update-baseline FILE to write one)")
        baseline_path = Path(args.baseline)
        baseline = (read_baseline(baseline_path) if baseline_path.is_file()
                    else samples_from_rows(_rows_of_runs(store, args.baseline, "--baseline")))
    verdicts, warnings_ = compare(baseline, latest, settings, alpha, args.allow_different_evaluation)
    for line in warnings_:
        print(f"warning: {line}", file=sys.stderr)
    print(markdown_table(HEADERS, [v.row() for v in verdicts], right=(4, 5, 6, 7)))
    ranges = sorted({v.commits for v in verdicts})
    if ranges:
        print(f"\ncommits between baseline and candidate: {', '.join(ranges)} (git log --oneline A..B lists them)")
    counts = {name: sum(v.verdict == name for v in verdicts) for name in ("REGRESSED", "IMPROVED", "UNCHANGED")}
    print("\n" + ", ".join(f"{n} {name}" for name, n in counts.items()))
    if args.junit:
        junit_xml(verdicts, args.junit)
    return 1 if counts["REGRESSED"] else 0


def _rows_of_runs(store, spec: str | None, flag: str) -> list[dict]:
    """The measurements of runs ``12`` or ``12,13,14`` (default: the latest run), each row once."""
    if spec is None:
        latest = store.latest_run_id()
        if latest is None:
            raise UsageError("the store has no runs yet; run 'python -m harness run' first")
        ids = [latest]
    else:
        try:
            ids = [int(part) for part in spec.split(",") if part.strip()]
        except ValueError:
            raise UsageError(f"{flag} {spec!r}: give run ids like 12 or 12,13,14, or a baseline file that exists") from None
    known = {run["id"] for run in store.runs()}
    missing = [i for i in ids if i not in known]
    if missing:
        raise UsageError(f"{flag}: no run {missing[0]} in the store; list runs with 'python -m harness report --all'")
    rows, seen = [], set()
    for run_id in ids:
        for row in store.measurements(run_id):
            if row["id"] not in seen:
                seen.add(row["id"])
                rows.append(row)
    return rows
