"""``search``: one search under a budget, its candidates written (``harness.search_job``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.errors import UsageError
from harness.commands.common import common_options, output_dir, search_overrides, training_options
from search.strategy import SEARCH_STRATEGIES


def add_parser(commands) -> None:
    parser = commands.add_parser("search", help="search a configuration under a budget, finetune it, write candidates")
    common_options(parser, store=False)
    parser.add_argument("--config", type=Path, help="TOML config; its [udc] section holds the search settings")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--budget", help="the budget: flash=32KiB (Vela's Flash of the compiled model; a plain size "
                        "is Flash), size_bound=24KB (the UDC paper's bound), macs=N, npu_cycles=N, sram=30KiB; "
                        "several joined by commas")
    budget.add_argument("--mac-budget", type=int, metavar="N", help="a MAC budget: the same as --budget macs=N")
    # --macs names the NPU's MACs per cycle on run and measure; on search it only says where the MAC budget went.
    parser.add_argument("--macs", dest="macs_on_search", help=argparse.SUPPRESS)
    parser.add_argument("--strategy", choices=SEARCH_STRATEGIES, default="udc",
                        help="udc (default), dnas (vanilla DNAS, eq. 6), random (random search), or a seed peer: "
                        "zur (Zur et al.), unas (UNAS), neuralscale (NeuralScale)")
    training_options(parser, full_help="the long schedule")
    parser.add_argument("--processes", type=int, default=1,
                        help="spread the MC samples over this many processes (torch.distributed: NCCL, one GPU a "
                        "process, with --device cuda; gloo on CPUs)")


def main(args) -> int:
    from core.budgets import parse_budgets
    from core.search_result import SearchResult
    from harness.config import load_config
    from harness.search_job import search_job

    if args.macs_on_search is not None:
        raise UsageError("search takes its MAC budget as --mac-budget N (--macs is the NPU's MACs per cycle on "
                         "run and measure)")
    if args.budget is None and args.mac_budget is None:
        raise UsageError("give a budget: --budget flash=32KiB (Vela's Flash), --budget size_bound=24KB or "
                         "--mac-budget N")
    if args.mac_budget is not None and args.mac_budget <= 0:
        raise UsageError(f"--mac-budget {args.mac_budget} is not a positive MAC count")
    limits = parse_budgets(args.budget) if args.budget is not None else {"macs": float(args.mac_budget)}
    config = load_config(args.config, {"run": {"dataset": args.dataset, "data_path": args.data_path,
                                               "preset": args.preset, "out": str(args.out) if args.out else None},
                                       "search": {"supernet": args.supernet, "device": args.device},
                                       "udc": search_overrides(args)})
    candidate, searched, directory = search_job(config, args.strategy, limits, args.processes,
                                                output_dir(args, config["run"]["out"]), args.quiet)
    meta = candidate.spec["meta"]
    search = SearchResult.from_meta(meta)
    print(f"{candidate.name}: {search.budget_line()}; float accuracy {100 * meta['accuracy_float']:.2f}%")
    print(f"deployed candidate: {directory / 'deployed'}" + (f"\nsearched candidate: {directory / 'searched'}"
                                                              if searched is not None else ""))
    print(f"measure it: python -m harness measure --candidate {directory / 'deployed'} --target vela")
    if not search.met():
        print(f"error: {candidate.name} is over its budget (written, marked constraint_met=false); raise the budget"
              + ("" if (meta.get("search") or {}).get("repair", True) else " or enable udc.repair"),
              file=sys.stderr)
        return 1
    return 0

