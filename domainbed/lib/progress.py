"""A training progress bar with ETA on a terminal, and nothing at all in logs.

The bar goes to the process's real stderr (`sys.__stderr__`), never through train.py's
Tee, so out.txt and err.txt stay exactly as upstream writes them. When that stream is not
a terminal (a launcher, a pipe, a file) the bar is a silent stand-in with the same methods.
"""
import sys


class _Silent:
    def update(self, n=1):
        pass

    def clear(self):
        pass

    def refresh(self):
        pass

    def close(self):
        pass


def progress_bar(total, initial=0, stream=None):
    """A bar over `total` steps starting at `initial`: tqdm on a tty, silent otherwise."""
    stream = sys.__stderr__ if stream is None else stream
    if stream is None or not _isatty(stream):
        return _Silent()
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, file=stream, unit="step",
                dynamic_ncols=True, leave=False)


def _isatty(stream):
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or exotic streams
        return False
