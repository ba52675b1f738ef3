"""Command-line plumbing shared by every script (torch-free).

* `OneLineErrorParser`: argparse whose usage errors are one line (exit 2).
* `CommandError`: the base of library errors whose message is written for the user (what
  is wrong, what to do). Library modules raise these, never `SystemExit`; the script that
  called them decides how to exit.
* `one_line_errors`: every script's last line of defence, around its `main()`: a
  `CommandError` is its message on one line, an interrupt or an error nobody foresaw is one
  line saying what happened and what to do (exit codes 1 and 130). Foreseen bad input is
  handled earlier, by each command (exit 2).
"""
import argparse
import sys


class CommandError(Exception):
    """An error whose message is meant for the user as it is (one line, says what to do).

    `one_line_errors` prints it as `prog: error: <message>` and exits with `exit_code`."""

    exit_code = 1


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
    """Print the CommandError `error` as `prog: error: <its message>` on one line (stderr);
    returns its exit code."""
    print(f"{prog}: error: {squeeze(error, None)}", file=sys.stderr)
    return error.exit_code


def one_line_errors(main, argv, prog, interrupted, describe=None):
    """main(argv), with a CommandError -> `prog: error: <its message>` (its exit code),
    KeyboardInterrupt -> `prog: <interrupted>` (130) and any other exception ->
    `prog: error: <describe(error)>` (1); `describe` defaults to the exception's type and
    message."""
    try:
        return main(argv)
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return 130
    except CommandError as error:
        return report(prog, error)
    except Exception as error:
        message = describe(error) if describe else f"{type(error).__name__}: {squeeze(error)}"
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 1
