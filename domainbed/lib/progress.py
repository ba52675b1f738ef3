"""Progress bars on a terminal, and nothing at all in logs (the one tqdm-on-a-tty helper).

A bar is drawn only when its stream is a terminal; on a launcher's pipe or in a log file
the bar is a silent stand-in with the same methods, so out.txt, err.txt and captured
output stay exactly as upstream writes them.

* `progress_bar(total, initial)`: train.py's step bar, on the process's real stderr
  (`sys.__stderr__`), never through train.py's Tee;
* `progress(items)`: an iterable, wrapped in a bar on the current `sys.stderr` when that
  is a terminal (sweep's "Making job directories", collect_results' loading).
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


def on_terminal(stream):
    """Whether `stream` is an open terminal."""
    try:
        return stream is not None and bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or exotic streams
        return False


def progress_bar(total, initial=0, stream=None):
    """A bar over `total` steps starting at `initial`: tqdm on a tty, silent otherwise."""
    stream = sys.__stderr__ if stream is None else stream
    if not on_terminal(stream):
        return _Silent()
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, file=stream, unit="step",
                dynamic_ncols=True, leave=False)


def progress(items, stream=None, **options):
    """`items`, in a tqdm bar (`options` are tqdm's) when `stream` (default: the current
    sys.stderr) is a terminal; `items` themselves otherwise."""
    stream = sys.stderr if stream is None else stream
    if not on_terminal(stream):
        return items
    from tqdm import tqdm

    return tqdm(items, file=stream, leave=False, **options)
