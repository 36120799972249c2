"""``store``: the results store's schema, shown or upgraded."""

from __future__ import annotations


from core.errors import UsageError
from harness.commands.common import common_options, output_dir


def add_parser(commands) -> None:
    parser = commands.add_parser("store", help="show or upgrade the results store's schema")
    common_options(parser)
    parser.add_argument("action", choices=["status", "upgrade"],
                        help="status: the store's schema revision; upgrade: migrate an older store (SQLite: backed up first)")


def main(args) -> int:
    from results.schema import SCHEMA_REVISION, STORE_FILENAME
    from results.store import Store

    out_dir = output_dir(args)
    url = args.store or f"sqlite:///{(out_dir / STORE_FILENAME).resolve()}"
    if not args.store and not (out_dir / STORE_FILENAME).is_file():  # neither command makes a store
        raise UsageError(f"no store in {out_dir} (no {STORE_FILENAME}); pass the --out DIR of a run, or --store URL")
    with Store(url, upgrade=args.action == "upgrade", status_only=args.action == "status") as store:
        if store.upgraded_from:
            print(f"{store!r}: schema {store.upgraded_from} -> {SCHEMA_REVISION}"
                  + (f" (the old file is kept as {store.backup})" if store.backup else ""))
        elif store.revision != SCHEMA_REVISION:
            print(f"{store!r}: schema {store.revision}, older than this harness's {SCHEMA_REVISION}; "
                  f"upgrade it with '{store.upgrade_command()}' (keeps every row)")
            return 1
        else:
            print(f"{store!r}: schema {SCHEMA_REVISION}, current; {len(store.runs())} runs")
    return 0
