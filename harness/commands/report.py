"""``report``: the markdown (and HTML) report of stored measurements."""

from __future__ import annotations


from core.errors import UsageError
from harness.commands.common import common_options, open_store, output_dir


def add_parser(commands) -> None:
    parser = commands.add_parser("report", help="write the markdown report and plots for stored measurements")
    common_options(parser)
    parser.add_argument("--run", type=int, help="run id (default: the latest run)")
    parser.add_argument("--all", action="store_true", help="every stored measurement instead of one run")
    parser.add_argument("--since", help="measurements made on or after DATE (YYYY-MM-DD or an ISO time, UTC)")
    parser.add_argument("--html", action="store_true", help="also write a self-contained report.html")


def main(args) -> int:
    import datetime as dt

    from results.report import write_html, write_report

    out_dir = output_dir(args)
    with open_store(args, out_dir) as store:
        if args.since:
            try:
                since = dt.datetime.fromisoformat(args.since)
            except ValueError:
                raise UsageError(f"--since {args.since!r} is not a date; write it like 2026-11-01 or 2026-11-01T18:00") from None
            rows, name = store.measurements(since=since), f"since-{since:%Y%m%dT%H%M}"
            title = f"UDC harness report: measurements since {since:%Y-%m-%d %H:%M} UTC"
            if not rows:
                raise UsageError(f"no measurements since {args.since}; try an earlier date or --all")
        elif args.all:
            rows, name, title = store.measurements(), "all", "UDC harness report: all measurements"
        else:
            run_id = args.run or store.latest_run_id()
            if run_id is None:
                raise UsageError(f"the store in {out_dir} has no runs yet; run 'python -m harness run' first")
            rows, name, title = store.measurements(run_id), f"run-{run_id}", f"UDC harness report: run {run_id}"
            if not rows:
                raise UsageError(f"run {run_id} has no measurements; list runs with 'python -m harness report --all'")
        # The history section follows this report's candidates through every run in the store.
        history = store.history([r["candidate_name"] for r in rows if r.get("candidate_name")])
        path = write_report(rows, out_dir / "reports" / name, title=title, history=history)
    print(path)
    if args.html:
        print(write_html(path))
    return 0
