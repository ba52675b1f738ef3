"""The one base of every error a user of DomainBed sees, and the exit codes (torch-free).

Library code (training, sweeps, launchers, studies, datasets) raises a `DomainBedError`
whose message is written for the user: one line, what is wrong and what to do. It never
exits. The front ends (`domainbed/scripts/*`, through `lib/cli.py`) print it as
`<command>: error: <message>` and exit with its `exit_code`; `domainbed.train()` and the
other Python entry points let it through (an `except ValueError` or `except OSError` of
older callers still catches the errors that were such before: they keep those bases).

Exit codes (a class's own code; a command may reword an error and exit otherwise, e.g.
train.py refuses a bad DOMAINBED_THREADS as a `BadInput`, exit 2):

* 1 `EXIT_FAILURE`: the command could not do its work here (an installation, network,
  launcher or environment-variable problem, or a sweep a study ran stopped); fix the
  cause and rerun. `PluginError`, `LauncherError`, `MatplotlibMissing`, `SettingError`,
  `DownloadError`, `SweepStopped`.
* 2 `EXIT_BAD_INPUT`, the default: an argument, name, hparam, file or directory the user
  gave; nothing was written. `BadInput` and its kinds, `SweepError`, `WriteRuleError`...
* 3 `EXIT_NON_FINITE`: a non-finite loss stopped the run (no `done`).
* 4 `EXIT_IO_ERROR`: writing the job directory failed (a full disk, permissions):
  `WriteError`.
* 128 + N: stopped by signal N after a checkpoint (resumable): `RunStopped`.
* 130 `EXIT_INTERRUPTED`: interrupted (Ctrl-C); no error class.

docs/architecture.md ("Errors and exit codes") lists every class.
"""

EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_NON_FINITE = 3
EXIT_IO_ERROR = 4     # writing the job directory failed (disk full, permissions...)
EXIT_INTERRUPTED = 130


class DomainBedError(Exception):
    """An error whose message is meant for the user as it is (one line, says what to do).

    A front end prints it as `<command>: error: <message>` and exits with `exit_code`;
    a subclass whose message already starts with the name of what stopped sets `prefixed`
    to False and is printed as it is."""

    exit_code = EXIT_BAD_INPUT
    prefixed = True


class BadInput(DomainBedError):
    """A request these arguments, names, hparams, files or this installation cannot
    satisfy, refused before anything is written; the message says what to do (exit 2).

    `domainbed.training.BadInput` is this class: `domainbed.train()` raises it, or one of
    its kinds (`ValidationError`, `HparamError`, `DatasetArgumentError`, ...)."""

    exit_code = EXIT_BAD_INPUT
