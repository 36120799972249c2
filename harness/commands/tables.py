"""``tables``: the UDC paper's tables regenerated."""

from __future__ import annotations

import sys

from core.errors import UsageError
from harness.commands.common import common_options, open_store, output_dir


def add_parser(commands) -> None:
    parser = commands.add_parser("tables", help="regenerate the UDC paper's tables (markdown + CSV)")
    common_options(parser)
    parser.add_argument("--paper", choices=["udc"], default="udc", help="the paper whose tables to regenerate (udc)")
    parser.add_argument("--only", choices=["table2", "table3", "table4", "table6", "table7"],
                        help="one table: table2 (computed, no training), table3 (ablation runs), table4 (sizes), "
                        "table6/table7 (ours beside the paper's cited peers); default: all")
    parser.add_argument("--seed", type=int, default=0, help="Table 2: the first seed of the fixed pi and the Monte-Carlo samples")
    parser.add_argument("--seeds", type=int, default=5, help="Table 2: seeds averaged per cell (mean +- sd; default 5)")


def main(args) -> int:
    from results.tables import paper_tables

    out_dir = output_dir(args)
    with open_store(args, out_dir) as store:
        rows = store.measurements()
    computed, text = None, ""
    if args.only in (None, "table2"):  # the search computes it (torch); the other tables read the store
        from search.table2 import format_table2, table2_over_seeds

        if args.seeds < 1:
            raise UsageError(f"--seeds must be at least 1, got {args.seeds}")
        computed = table2_over_seeds(args.seeds, args.seed)
        text = format_table2(computed)
    written = []
    for table in paper_tables(rows, computed, text):
        if args.only in (None, table.name):
            print(table.markdown())
            written += table.write(out_dir / "tables")
    print(f"written: {', '.join(str(p) for p in written)}", file=sys.stderr)
    return 0
