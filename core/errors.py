"""Errors the CLI turns into one line and an exit code: 2 for a usage error, 1 for a failed job."""


class HarnessError(Exception):
    """A failed run: bad model, failed compile, dead target. Exit code 1."""

    exit_code = 1


class UsageError(HarnessError):
    """Bad input from the user: wrong flag, malformed file, missing dataset. Exit code 2."""

    exit_code = 2


class ModelError(HarnessError):
    """A failure the model itself causes (a compiler rejects it, native code aborts on it): measuring it
    again fails again, so a resumed run keeps the failed row instead of retrying (``--retry-failed``)."""
