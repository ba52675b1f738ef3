"""How a training job stops short (torch-free): its exit codes and the errors whose
one-line message tells the user what to do.

Library code raises these (`domainbed.errors.DomainBedError`s); `scripts/train.py` prints
them as `train.py: error: <message>` and exits with their `exit_code`."""
from domainbed.errors import (EXIT_BAD_INPUT, EXIT_IO_ERROR, EXIT_NON_FINITE,  # noqa: F401
                              BadInput, DomainBedError)

# A reason to stop with one line on the console (after the logs are closed) and its
# `exit_code`: every DomainBedError (the name `domainbed.training` has always exported).
JobError = DomainBedError


class WriteError(DomainBedError):
    """Writing the job directory failed (a full disk, permissions...)."""

    exit_code = EXIT_IO_ERROR


class RunStopped(DomainBedError):
    """`domainbed.train()` only: the run ended without `done` (a non-finite loss, exit code
    3, or a stop signal, 128 + its number) after saying why on the console and in the
    job's logs; calling it again resumes from the last checkpoint."""

    def __init__(self, message, exit_code):
        super().__init__(message)
        self.exit_code = exit_code


# Besides the learning rate, hparams whose extreme values overflow a loss: FGMix's mixing
# strength (kappa), its loss weight (gamma) and its policy's temperature (tau, small).
SCALE_HPARAMS = ("fgmix_kappa", "fgmix_gamma", "fgmix_tau")


def non_finite_advice(hparams):
    """What to try after a non-finite loss: a smaller learning rate, and the run's values
    of the hparams in SCALE_HPARAMS it has (every name the user may have set too high)."""
    advice = "Try a smaller learning rate, e.g. --hparams '{\"lr\": 1e-4}'"
    named = [f"{name}={hparams[name]!r}" for name in SCALE_HPARAMS if name in (hparams or {})]
    if named:
        advice += (f", or check {', '.join(named)} (a large fgmix_kappa or fgmix_gamma, or a "
                   "small fgmix_tau, makes the loss overflow)")
    return advice
