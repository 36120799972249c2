"""``python -m harness``: run, search, measure, regress, report, tables, store, farm, firmware, doctor.

Each command is a module of ``harness.commands``. Errors are one line naming the problem and the fix;
exit 2 for usage errors, 1 for failed runs; tracebacks only under ``--debug``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings

from core.errors import HarnessError, UsageError
from harness.commands import COMMANDS


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own errors become our one-line usage errors
        raise UsageError(f"{message} (see: python -m harness {self.prog.split()[-1]} --help)")


def _command(name: str):
    return importlib.import_module(f"harness.commands.{name.replace('-', '_')}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="harness", description="UDC search and hardware-in-the-loop measurement for Arm Ethos-U55.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMANDS:
        _command(name).add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    if debug:  # tracebacks of failed candidates go to a log file under the output directory; --debug shows them too
        handler = logging.StreamHandler(sys.stderr)
        logging.getLogger("harness").addHandler(handler)
        logging.getLogger("harness").setLevel(logging.DEBUG)
    try:
        args = build_parser().parse_args(argv)
        warnings.showwarning = _show_warning
        return _command(args.command).main(args)
    except (HarnessError, UsageError) as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted: measurements so far are stored; run the same command again to resume", file=sys.stderr)
        return 130


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings meant for users (a missed budget) as one line, not a source location."""
    print(f"warning: {message}", file=sys.stderr)
