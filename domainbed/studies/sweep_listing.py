"""`sweep launch` under reproduce and the unit-test suite, run in-process through the sweep
library (`sweeps.arguments.main`, the command's own code), with its per-job listing in a
file and one summary line on the console (upstream's sweep prints one `Not launched: DIR
(...)` line per job: hundreds of lines a reader has to scroll past)."""
import collections
import contextlib
import io
import re
import sys

from domainbed import settings
from domainbed.errors import EXIT_FAILURE, DomainBedError


class SweepStopped(DomainBedError):
    """A sweep a study launched exited with an error (printed above by the sweep); the
    message, which starts with the study's name, says to fix it and rerun (exit 1)."""

    exit_code = EXIT_FAILURE
    prefixed = False

# Upstream's job line: `<state>: <job directory> (dataset, algorithm, test_envs, hparams_seed)`.
JOB_LINE = re.compile(r"^(Done|Incomplete|Not launched): \S+ \(")


def run_sweep(argv, listing_path, env=None):
    """Run the sweep command `argv` (`sweep`'s arguments, e.g. ["launch", ...]) in this
    process, with `env` ({settings.Setting: text} to set while it runs); its job lines are appended to
    `listing_path` and summed up in one line, every other line is printed as it comes.
    Returns the command's exit code, as the command line would (a refusal: its one line on
    stderr, 2)."""
    from domainbed.lib.cli import one_line_errors
    from domainbed.sweeps.arguments import main

    with open(listing_path, "a") as listing, settings.overridden(env or {}):
        lines = _ListingWriter(listing, listing_path)
        try:
            with contextlib.redirect_stdout(lines):
                code = one_line_errors(main, list(argv), "sweep",
                                       "interrupted; run the same command again to continue")
        except SystemExit as exit_:   # argparse's usage error (printed on stderr)
            code = exit_.code
        finally:
            lines.close()
    return code or 0


class _ListingWriter(io.TextIOBase):
    """stdout for the sweep: job lines into the listing, the rest to the console."""

    def __init__(self, listing, listing_path):
        self.listing, self.listing_path = listing, listing_path
        self.console = sys.stdout
        self.counts = collections.Counter()
        self.partial = ""

    def writable(self):
        return True

    def write(self, text):
        self.partial += text
        *complete, self.partial = self.partial.split("\n")
        for line in complete:
            self._line(line + "\n")
        return len(text)

    def _line(self, line):
        match = JOB_LINE.match(line)
        if match:
            self.listing.write(line)
            self.counts[match.group(1)] += 1
            return
        self._summary()
        self.console.write(line)
        self.console.flush()

    def _summary(self):
        if self.counts:   # the listing has ended: its summary, once
            self.console.write(summary_line(self.counts, self.listing_path) + "\n")
            self.counts.clear()

    def flush(self):
        self.console.flush()

    def close(self):
        if self.partial:
            self._line(self.partial)
            self.partial = ""
        self._summary()
        self.console.flush()


def summary_line(counts, listing_path):
    return f"(The {sum(counts.values())} jobs, one line each: {listing_path})"


def start_listing(listing_path):
    """An empty listing file for this invocation's sweeps."""
    open(listing_path, "w").close()
    return listing_path
