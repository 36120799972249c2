"""``search``: one search under a budget, its candidates written (``harness.search_job``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.errors import UsageError
from harness.commands.common import common_options, output_dir, training_options
from search.strategy import SEARCH_STRATEGIES


def add_parser(commands) -> None:
    parser = commands.add_parser("search", help="search a configuration under a budget, finetune it, write candidates")
    common_options(parser, store=False)
    parser.add_argument("--config", type=Path, help="TOML config; its [udc] section holds the search settings")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--budget", help="compressed-size budget e* (bytes, or with a unit: 24KB, 0.5MB, 20KiB)")
    budget.add_argument("--mac-budget", type=int, metavar="N",
                        help="MAC budget instead of a size budget (multiply-accumulates per inference)")
    # --macs names the NPU's MACs per cycle on run and measure; on search it only says where the MAC budget went.
    parser.add_argument("--macs", dest="macs_on_search", help=argparse.SUPPRESS)
    parser.add_argument("--strategy", choices=SEARCH_STRATEGIES, default="udc",
                        help="udc (default), dnas (vanilla DNAS, eq. 6), random (random search), or a seed peer: "
                        "zur (Zur et al.), unas (UNAS), neuralscale (NeuralScale)")
    training_options(parser, full_help="the long schedule")
    parser.add_argument("--processes", type=int, default=1,
                        help="spread the MC samples over this many processes (torch.distributed, gloo)")


def main(args) -> int:
    from core.units import parse_budget
    from harness.config import load_config
    from harness.search_job import search_job

    if args.macs_on_search is not None:
        raise UsageError("search takes its MAC budget as --mac-budget N (--macs is the NPU's MACs per cycle on "
                         "run and measure)")
    if args.budget is None and args.mac_budget is None:
        raise UsageError("give a budget: --budget 24KB (compressed size) or --mac-budget N (multiply-accumulates)")
    if args.mac_budget is not None and args.mac_budget <= 0:
        raise UsageError(f"--mac-budget {args.mac_budget} is not a positive MAC count")
    budget_bytes = parse_budget(args.budget) if args.budget is not None else None
    config = load_config(args.config, {"run": {"dataset": args.dataset, "data_path": args.data_path,
                                               "preset": args.preset, "out": str(args.out) if args.out else None},
                                       "search": {"supernet": args.supernet}})
    candidate, searched, directory = search_job(config, args.strategy, budget_bytes, args.mac_budget, args.processes,
                                                output_dir(args, config["run"]["out"]), args.quiet)
    from core.search_result import SearchResult

    search = SearchResult.from_meta(candidate.spec["meta"])
    cost = (f"size bound {search.size_bits / 8:.0f} bytes of {budget_bytes:.0f}" if budget_bytes is not None
            else f"{search.macs:.0f} MACs of {args.mac_budget}")
    print(f"{candidate.name}: {cost}, constraint {'met' if search.constraint_met else 'NOT MET'}"
          f"{' after repair' if search.repair_moves else ''}; float accuracy "
          f"{100 * candidate.spec['meta']['accuracy_float']:.2f}%")
    print(f"deployed candidate: {directory / 'deployed'}" + (f"\nsearched candidate: {directory / 'searched'}"
                                                              if searched is not None else ""))
    print(f"measure it: python -m harness measure --candidate {directory / 'deployed'} --target vela")
    if not search.constraint_met:
        print(f"error: {candidate.name} is over its budget (written, marked constraint_met=false); "
              "raise the budget or enable udc.repair", file=sys.stderr)
        return 1
    return 0
