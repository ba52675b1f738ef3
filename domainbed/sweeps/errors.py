"""A sweep's one error: a one-line reason to stop (torch-free)."""
from domainbed.lib.cli import CommandError


class SweepError(CommandError):
    """A one-line reason to stop (exit 2), before anything is made or launched unless the
    message says otherwise; the message says what to do. `scripts/sweep.py` prints it as
    its usage errors are printed."""

    exit_code = 2
