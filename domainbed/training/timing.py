"""Where a run's wall time goes: start-up (the process, imports, dataset, algorithm),
data (waiting for the next minibatches), steps (the algorithms' updates), evaluation (the
records' accuracies), checkpoints (the training state handed to the background writer, and
waiting for it) and model files. Printed as one line at the end of out.txt, and read back
by `benchmark --run_cost` on image datasets."""
import contextlib
import os
import time

PHASES = ("start-up", "data", "steps", "evaluation", "checkpoints", "model files")
SUMMARY_PREFIX = "Wall time:"


def process_age_seconds():
    """Seconds since this process started (Linux /proc), or None where unknown."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rpartition(")")[2].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        return None


_first_job_of_process = True


def job_start_time():
    """perf_counter() when this job started: the process's start for its first job (the
    interpreter and imports count), now for a later one (a warm pool worker)."""
    global _first_job_of_process
    now = time.perf_counter()
    age = process_age_seconds() if _first_job_of_process else None
    _first_job_of_process = False
    return now - (age or 0.0)


class PhaseClock:
    """Accumulates wall seconds per phase (`with clock("data"): ...`); start-up is the time
    from `started` (a `job_start_time()`) to the clock's creation, when the loop starts."""

    def __init__(self, started=None):
        now = time.perf_counter()
        self.started = now if started is None else started
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self.seconds["start-up"] = now - self.started

    @contextlib.contextmanager
    def __call__(self, phase):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - start

    def summary(self):
        total = time.perf_counter() - self.started
        parts = ", ".join(f"{phase} {self.seconds[phase]:.1f}" for phase in PHASES)
        other = total - sum(self.seconds.values())
        return f"{SUMMARY_PREFIX} {total:.1f} s = {parts}, other {other:.1f} (s)"


def parse_summary(line):
    """{"total": s, phase: s, ..., "other": s} from a `summary()` line; None otherwise."""
    if not line.startswith(SUMMARY_PREFIX):
        return None
    head, _, parts = line[len(SUMMARY_PREFIX):].partition("=")
    values = {"total": float(head.split()[0])}
    for part in parts.replace("(s)", "").split(","):
        name, _, number = part.strip().rpartition(" ")
        values[name] = float(number)
    return values
