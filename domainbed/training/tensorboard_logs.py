"""Optional TensorBoard scalars of a training run, beside results.jsonl (opt-in).

    DOMAINBED_TENSORBOARD=1 python -m domainbed.scripts.train ...   # or train.py --tensorboard
    tensorboard --logdir SWEEP_DIR                                  # one run per job directory

With it on, every checkpoint's record goes to `OUTPUT_DIR/tensorboard/` as scalars at its
`step`, under the names of results.jsonl (`env0_in_acc`, `env0_out_acc`, ..., `loss`,
`step_time`, `epoch`, `mem_gb`; `args` and `hparams` are not scalars, and go once into the
run's text tab). Nothing else changes: the records, `job.json`, the job hash and the command
strings are the same with it on or off (the train flag is not one of the job's args, and
sweeps pass the environment variable to their jobs). A resumed run drops its events beyond
the checkpoint it resumes from, as results.jsonl does.

The writer is torch's `torch.utils.tensorboard.SummaryWriter`, which needs the `tensorboard`
package (`pip install -e '.[tensorboard]'`); it is imported only when the log is on, so
nothing that reads results ever needs torch or tensorboard. `ScalarLog` is the whole
interface train.py uses: `log = open_log(output_dir, start_step, on)`, then `log(record)` at
each checkpoint and `log.close()`.
"""
import math
import numbers
import os

from domainbed import settings
from domainbed.errors import BadInput

ENV_VAR = settings.TENSORBOARD.name
SUBFOLDER = "tensorboard"
INSTALL_HINT = "pip install -e '.[tensorboard]' (or pip install tensorboard)"


class TensorBoardUnavailable(BadInput, ImportError):
    """The log was asked for but cannot be written; the message says what to do (exit 2)."""


def requested(flag=False):
    """Whether the log is on (the train flag, or DOMAINBED_TENSORBOARD set and not '0');
    a TensorBoardUnavailable when it is on and the writer cannot be imported."""
    from_env = settings.tensorboard()
    if flag or from_env:
        _summary_writer_class("--tensorboard" if flag
                              else f"{ENV_VAR}={settings.TENSORBOARD.text()}")
    return bool(flag or from_env)


def _summary_writer_class(how="the TensorBoard log"):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:
        raise TensorBoardUnavailable(
            f"{how} needs the tensorboard package ({error}): {INSTALL_HINT}, or leave the "
            "TensorBoard log off") from None
    return SummaryWriter


def scalars(record):
    """(name, value) of the record's finite numbers, but `step` (the x axis)."""
    return [(name, float(value)) for name, value in sorted(record.items())
            if name != "step" and isinstance(value, numbers.Real)
            and not isinstance(value, bool) and math.isfinite(value)]


class ScalarLog:
    """Called with each checkpoint's record; writes its scalars at record['step']."""

    def __init__(self, output_dir, start_step=0):
        writer_class = _summary_writer_class()
        # purge_step: TensorBoard hides the events of earlier starts from that step on.
        self.writer = writer_class(os.path.join(output_dir, SUBFOLDER),
                                   purge_step=start_step or None)
        self.described = False

    def __call__(self, record):
        step = int(record["step"])
        if not self.described:
            for key in ("args", "hparams"):
                if isinstance(record.get(key), dict):
                    text = "\n".join(f"    {k}: {v}" for k, v in sorted(record[key].items()))
                    self.writer.add_text(key, text, step)
            self.described = True
        for name, value in scalars(record):
            self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def close(self):
        self.writer.close()


class _Off:
    def __call__(self, record):
        pass

    def close(self):
        pass


def open_log(output_dir, start_step=0, on=False):
    """A ScalarLog for the run in output_dir, or a log that writes nothing when off."""
    return ScalarLog(output_dir, start_step) if on else _Off()
