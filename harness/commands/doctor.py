"""``doctor``: tools, datasets and targets with their status."""

from __future__ import annotations

from pathlib import Path

from harness.commands.common import common_options


def add_parser(commands) -> None:
    parser = commands.add_parser("doctor", help="list tools, datasets and targets with their status")
    common_options(parser, store=False)
    parser.add_argument("--config", type=Path, help="TOML config whose [firmware] and [board] places to check too")


def main(args) -> int:
    from harness.config import load_config
    from harness.doctor import checks

    rows = checks(load_config(args.config) if args.config else None)
    width = max(len(name) for name, _, _ in rows)
    for name, ok, detail in rows:
        print(f"{'ok ' if ok else '-- '} {name.ljust(width)}  {detail}")
    return 0 if all(ok for name, ok, _ in rows if name.startswith("target vela")) else 1
