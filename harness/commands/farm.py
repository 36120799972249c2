"""``farm``: candidates measured by a Dask board farm into a shared store."""

from __future__ import annotations

import sys
from pathlib import Path

from core.errors import UsageError
from harness.commands.common import common_options


def add_parser(commands) -> None:
    parser = commands.add_parser("farm", help="measure candidates on a Dask board farm into a shared store")
    common_options(parser)
    parser.add_argument("--scheduler", required=True, help="Dask scheduler address, e.g. tcp://farm-head:8786")
    parser.add_argument("--candidate", type=Path, action="append", default=[], help="candidate directory (repeatable)")
    parser.add_argument("--target", default="vela", help="target a worker must offer as a Dask resource (default: vela)")
    parser.add_argument("--dataset", help="dataset for accuracy, loaded on the worker")
    parser.add_argument("--eval-samples", type=int, default=0, help="test images for accuracy (0 = all)")
    parser.add_argument("--config", type=Path,
                        help="TOML config: the target's options ([vela], [firmware], [board]) and [measure] settings")


def main(args) -> int:
    from harness.config import load_config
    from harness.farm import candidate_directories, submit

    if not args.candidate:
        raise UsageError("nothing to measure: pass --candidate DIR (repeatable)")
    if not args.store:
        raise UsageError("the farm's workers write to one shared store: pass --store postgresql://USER@HOST/DB")
    config = load_config(args.config, {"run": {"target": args.target}})  # a bad config fails before any task is sent
    directories = candidate_directories(args.candidate)
    summaries = submit(args.scheduler, directories, args.target, args.store, (args.out or Path("harness-out")).resolve(),
                       args.dataset, args.eval_samples, args.quiet, config)
    failed = [s for s in summaries if s["status"] != "ok"]
    for summary in failed:
        print(f"{summary['candidate']}: FAILED on {summary['worker_host']}: {summary['error']}", file=sys.stderr)
    return 1 if failed else 0
