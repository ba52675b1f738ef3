"""The commands' last line of defence: no traceback on the console (torch-free).

Every script's `cli()` runs its `main()` through `one_line_errors`: an interrupt, or an
error nobody foresaw, becomes one line on stderr saying what happened and what to do, with
exit code 130 or 1. Foreseen bad input is handled earlier, by each command (exit 2).
"""
import sys


def squeeze(text, limit=300):
    """`text` on one line, at most `limit` characters."""
    return " ".join(str(text).split())[:limit]


def one_line_errors(main, argv, prog, interrupted, describe=None):
    """main(argv), with KeyboardInterrupt -> `prog: <interrupted>` (130) and any other
    exception -> `prog: error: <describe(error)>` (1); `describe` defaults to the
    exception's type and message."""
    try:
        return main(argv)
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return 130
    except Exception as error:
        message = describe(error) if describe else f"{type(error).__name__}: {squeeze(error)}"
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 1
