"""Train one algorithm on one dataset with some test environments held out.

Upstream DomainBed's train.py (same flags, defaults, order of operations, out.txt,
results.jsonl, model.pkl and done), made reliable:

* every input is checked before anything is written: a bad one is a one-line
  `train.py: error: ...` with a hint, exit code 2, and no file created or changed;
* a job directory belongs to one job (`job.json`) and one process (`.lock`);
* at every checkpoint step the full training state goes to `checkpoint.pt`; a restart in
  the same output_dir resumes from it exactly (results.jsonl is trimmed to that step);
* SIGTERM / SIGUSR1 finish the current step, checkpoint and exit with 128 + signal number
  (143 / 138) so that a launcher can requeue the job;
* a non-finite loss stops the run (exit 3) and any crash leaves a `failed` file; neither
  leaves `done`. See docs/reliability.md.

The command line only: the job is `domainbed.training.run_job` (the Python API:
`domainbed.train`).
"""
import sys

from domainbed.lib import threads

threads.prepare_process()   # the OpenMP wait policy, read once when torch starts
from domainbed.errors import DomainBedError  # noqa: E402
from domainbed.lib.cli import one_line_errors, report, squeeze  # noqa: E402
from domainbed.training import parse_command_line, run_job  # noqa: E402


def main(argv=None):
    try:
        return run_job(parse_command_line(argv))
    except DomainBedError as e:   # a refusal or a failed write: one line, its exit code
        return report("train.py", e)


def cli(argv=None):
    """The command line: main() with no traceback on the console. An unexpected error is
    one line (the traceback is in the job's err.txt), exit code 1."""
    def describe(error):
        where = getattr(error, "train_py_where", "before training started")
        return (f"{type(error).__name__}: {squeeze(error)} ({where}); rerun the same command "
                "to resume")

    return one_line_errors(main, argv, "train.py", "interrupted (Ctrl-C); rerun the same "
                           "command to resume from the last checkpoint", describe)


if __name__ == "__main__":
    sys.exit(cli())
