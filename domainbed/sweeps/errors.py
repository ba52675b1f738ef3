"""A sweep's one error: a one-line reason to stop (torch-free)."""
from domainbed.errors import EXIT_BAD_INPUT, DomainBedError


class SweepError(DomainBedError):
    """A one-line reason to stop (exit 2), before anything is made or launched unless the
    message says otherwise; the message says what to do. `scripts/sweep.py` prints it as
    its usage errors are printed."""

    exit_code = EXIT_BAD_INPUT
