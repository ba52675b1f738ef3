"""`sweep launch` under reproduce, with its per-job listing in a file and one summary line
on the console (upstream's sweep prints one `Not launched: DIR (...)` line per job: hundreds
of lines a reader has to scroll past)."""
import collections
import re
import subprocess

from domainbed.errors import EXIT_FAILURE, DomainBedError


class SweepStopped(DomainBedError):
    """A sweep a study launched exited with an error (printed above by the sweep); the
    message, which starts with the study's name, says to fix it and rerun (exit 1)."""

    exit_code = EXIT_FAILURE
    prefixed = False

# Upstream's job line: `<state>: <job directory> (dataset, algorithm, test_envs, hparams_seed)`.
JOB_LINE = re.compile(r"^(Done|Incomplete|Not launched): \S+ \(")


def run_sweep(command, listing_path, env=None):
    """Run `command` (a `sweep launch`); its job lines are appended to `listing_path` and
    summed up in one line, every other line is printed as it comes. Returns the exit code."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True, bufsize=1)
    counts = collections.Counter()
    with open(listing_path, "a") as listing:
        for line in process.stdout:
            match = JOB_LINE.match(line)
            if match:
                listing.write(line)
                counts[match.group(1)] += 1
                continue
            if counts:   # the listing has ended: its summary, once
                print(summary_line(counts, listing_path), flush=True)
                counts.clear()
            print(line, end="", flush=True)
    if counts:
        print(summary_line(counts, listing_path), flush=True)
    return process.wait()


def summary_line(counts, listing_path):
    return f"(The {sum(counts.values())} jobs, one line each: {listing_path})"


def start_listing(listing_path):
    """An empty listing file for this invocation's sweeps."""
    open(listing_path, "w").close()
    return listing_path
