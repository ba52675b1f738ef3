"""Command-line plumbing shared by every script (torch-free): the front end's side of
`domainbed.errors`.

* `OneLineErrorParser`: argparse whose usage errors are one line (exit 2).
* `CommandError`: the old name of `domainbed.errors.DomainBedError`, the base of every
  error whose message is written for the user (what is wrong, what to do). Library modules
  raise these, never `SystemExit`; the script that called them decides how to exit.
* `report`: a DomainBedError as its one line on stderr; returns its exit code.
* `domainbed_errors`: main(argv) with a DomainBedError reported (a study's command line,
  where an error nobody foresaw keeps its traceback).
* `one_line_errors`: every other script's last line of defence, around its `main()`: a
  `DomainBedError` is its message on one line with its exit code, an interrupt or an error
  nobody foresaw is one line saying what happened and what to do (exit codes 130 and 1).
"""
import argparse
import sys

from domainbed.errors import EXIT_FAILURE, EXIT_INTERRUPTED, DomainBedError

CommandError = DomainBedError   # the name library modules and tests imported


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but an error is one line (no usage block): what went wrong, what to do.

    `hint`, when given, is added in parentheses after every message (e.g. "see --help")."""

    def __init__(self, *args, hint=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.hint = hint

    def error(self, message):
        hint = f" ({self.hint})" if self.hint else ""
        self.exit(2, f"{self.prog}: error: {message}{hint}\n")


def squeeze(text, limit=300):
    """`text` on one line, at most `limit` characters (None: all of it)."""
    return " ".join(str(text).split())[:limit]


def report(prog, error):
    """Print the DomainBedError `error` on one line (stderr), as `prog: error: <its
    message>` or, when it is not `prefixed`, as its message alone; returns its exit code."""
    line = squeeze(error, None)
    print(f"{prog}: error: {line}" if error.prefixed else line, file=sys.stderr)
    return error.exit_code


def domainbed_errors(main, argv, prog):
    """main(argv), with a DomainBedError -> its one line (`report`) and its exit code."""
    try:
        return main(argv)
    except DomainBedError as error:
        return report(prog, error)


def one_line_errors(main, argv, prog, interrupted, describe=None):
    """main(argv), with a DomainBedError -> its one line (`report`) and its exit code,
    KeyboardInterrupt -> `prog: <interrupted>` (130) and any other exception ->
    `prog: error: <describe(error)>` (1); `describe` defaults to the exception's type and
    message."""
    try:
        return domainbed_errors(main, argv, prog)
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:
        message = describe(error) if describe else f"{type(error).__name__}: {squeeze(error)}"
        print(f"{prog}: error: {message}", file=sys.stderr)
        return EXIT_FAILURE
