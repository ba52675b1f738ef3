"""The one failure path of a run that started: what it leaves (`failed`, the traceback in
the logs, no temporary) and how it ends (an exit code, or the error to report)."""
import errno
import os
import re
import sys
import traceback

from domainbed.lib import jobdir
from domainbed.training import checkpoint
from domainbed.training.errors import EXIT_NON_FINITE, WriteError, non_finite_advice
from domainbed.training.loop import NonFiniteLoss


def record_failure(job, error, step, stop, logs):
    """What a run that stopped on `error` at `step` leaves (`failed`, the traceback in
    err.txt and out.txt, no temporary) and how it exits. Returns the exit code, or raises
    the DomainBedError or the error itself that the caller reports."""
    out = job.config.output_dir
    if isinstance(error, NonFiniteLoss):
        jobdir.try_write_failed(out, str(error), step)
        print(f"train.py: error: {error}; the run stopped (no 'done'). "
              f"{non_finite_advice(job.hparams)}", file=sys.stderr)
        return EXIT_NON_FINITE
    if stop.signum is not None:
        # Stopping anyway (e.g. the launcher also killed the data workers): the last
        # checkpoint stands, and this is no failure of the job.
        return 128 + stop.signum
    logs.log_only(traceback.format_exc())   # the console gets one line, after the logs close
    checkpoint.remove_own_temporaries(out)
    recorded = jobdir.try_write_failed(out, f"{type(error).__name__}: {error}", step)
    if isinstance(error, OSError):
        # Writing the job directory failed (a full disk, permissions...).
        raise WriteError(io_error_message(error, step, recorded)) from None
    error.train_py_where = (f"at step {step}; `failed` written, the traceback is in "
                            f"{os.path.join(out, 'err.txt')}")
    raise error


def io_error_message(error, step, recorded):
    filename = getattr(error, "filename", None)
    in_the_way = bool(filename) and os.path.isdir(str(filename))   # e.g. a directory
    if in_the_way:   # named as it is: it is what to move away
        where = f" ({filename} is a directory in the way; move it away)"
    else:            # the file being written, not its (removed) temporary
        where = f" ({re.sub(r'[.]tmp[.][0-9]+$', '', str(filename))})" if filename else ""
    if getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
        what = f"the disk is full{where}"
        todo = "free some space, then rerun the same command: it resumes from the last checkpoint"
    else:
        what = f"{type(error).__name__}: {error.strerror or error}{where}"
        todo = "fix the cause, then rerun the same command: it resumes from the last checkpoint"
    marker = "`failed` written" if recorded else "no `failed` written (no room)"
    return f"{what} at step {step}; {marker}; {todo}"
