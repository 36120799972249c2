"""Errors the CLI turns into one line and an exit code (DESIGN.md section 5)."""


class HarnessError(Exception):
    """A failed run: bad model, failed compile, dead target. Exit code 1."""

    exit_code = 1


class UsageError(HarnessError):
    """Bad input from the user: wrong flag, malformed file, missing dataset. Exit code 2."""

    exit_code = 2
