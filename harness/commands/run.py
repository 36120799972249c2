"""``run``: the main job from the command line (``harness.run``)."""

from __future__ import annotations

from harness.commands.common import (common_options, open_store, output_dir, search_overrides, split_list,
                                     target_arguments, target_overrides, training_options)
from search.strategy import SEARCH_STRATEGIES


def add_parser(commands) -> None:
    parser = commands.add_parser("run", help="train, compress, measure every candidate, write a report")
    common_options(parser)
    target_arguments(parser)
    training_options(parser, full_help="full training and test set")
    parser.add_argument("--eval-samples", type=int, help="test images for int8 accuracy (0 = all)")
    parser.add_argument("--force", action="store_true", help="re-measure candidates already in the store")
    parser.add_argument("--retry-failed", action="store_true",
                        help="measure again models whose stored failure they caused themselves (a compiler error, a crash)")
    parser.add_argument("--budgets", nargs="+", metavar="BUDGET",
                        help="the searches' budgets, each like flash=40KiB (a plain size is Flash), size_bound=24KB, "
                        "macs=N, npu_cycles=N or sram=30KiB, kinds of one budget joined by commas (default: flash=40KiB)")
    parser.add_argument("--seeds", type=int, help="run every strategy with this many seeds (default 1); the report "
                        "gives each strategy's mean, 95%% interval and paired tests")
    parser.add_argument("--strategies", help=f"comma-separated subset of uniform,{','.join(SEARCH_STRATEGIES)} "
                        "(default: uniform,udc,random)")
    parser.add_argument("--ablation", choices=["table3"], help="also run the rows of the UDC paper's Table 3 at each budget")


def main(args) -> int:
    from harness.config import load_config
    from harness.run import run_job

    overrides = {
        "run": {"target": args.target, "dataset": args.dataset, "data_path": args.data_path, "preset": args.preset,
                "out": str(args.out) if args.out else None, "budgets": args.budgets, "seeds": args.seeds,
                "strategies": split_list(args.strategies), "ablation": args.ablation},
        "search": {"supernet": args.supernet, "device": args.device}, "udc": search_overrides(args),
        "measure": {"eval_samples": args.eval_samples, "allow_cpu_ops": args.allow_cpu_ops},
        **target_overrides(args),
    }
    config = load_config(args.config, overrides)
    out_dir = output_dir(args, config["run"]["out"])
    with open_store(args, out_dir) as store:
        _, records, _ = run_job(config, out_dir, store, quiet=args.quiet, force=args.force,
                                retry_failed=args.retry_failed)
    return 1 if any(r.get("status") != "ok" for r in records) else 0
