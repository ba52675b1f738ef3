"""The job-directory protocol shared by `train.py` (writer) and `sweep` (reader).

Besides upstream's `out.txt`, `err.txt`, `results.jsonl`, `model.pkl` and `done`, a job's
output directory holds:

* `job.json`       `{"args": {...}}`: the train args that identify the job. A later start
                   with other identifying args is refused instead of mixing records.
* `.lock`          train.py holds an exclusive `flock` on it for its whole life. Anybody can
                   test liveness by trying the same non-blocking lock and releasing it.
* `heartbeat.json` `{"pid", "host", "step", "n_steps", "started", "updated", "start_step"}`
                   (unix times), rewritten atomically: liveness across hosts, progress, ETA.
* `failed`         `{"reason": "...", "step": N}` when the run stopped on an error.

Torch-free on purpose: `sweep status` imports it to look at thousands of directories.
"""
import errno
import fcntl
import json
import os
import socket
import time

from domainbed.lib.misc import atomic_write_text

JOB_FILE = "job.json"
LOCK_FILE = ".lock"
HEARTBEAT_FILE = "heartbeat.json"
FAILED_FILE = "failed"
DONE_FILE = "done"
RESULTS_FILE = "results.jsonl"

# A heartbeat younger than this counts as a live job on another host (train.py rewrites
# it at least every HEARTBEAT_PERIOD_S while training, and at every checkpoint).
HEARTBEAT_FRESH_S = 600
HEARTBEAT_PERIOD_S = 30


class JobRunningError(RuntimeError):
    """Another process holds the job's lock."""


class JobIdentityError(ValueError):
    """The directory belongs to a job with other identifying args."""


# ---------------------------------------------------------------------------------------
# Lock

def _open_lock_file(path, create):
    flags = os.O_RDWR | (os.O_CREAT if create else 0)
    try:
        return os.open(path, flags, 0o644)
    except PermissionError:
        # A read-only view of somebody else's job: a shared lock attempt still tells us
        # whether an exclusive one is held.
        return os.open(path, os.O_RDONLY)


class JobLock:
    """`with JobLock(output_dir):` holds the job's exclusive lock or raises JobRunningError.

    The lock is an advisory `flock` on `output_dir/.lock`; the kernel drops it when the
    process dies, however it dies, so a stale `.lock` file never blocks a restart.
    """

    def __init__(self, output_dir):
        self.output_dir = output_dir
        self.path = os.path.join(output_dir, LOCK_FILE)
        self._fd = None

    def acquire(self):
        os.makedirs(self.output_dir, exist_ok=True)
        fd = _open_lock_file(self.path, create=True)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise JobRunningError(_already_running_message(self.output_dir)) from None
            raise
        self._fd = fd
        return self

    def release(self):
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False


def _already_running_message(output_dir):
    beat = read_heartbeat(output_dir) or {}
    who = f" (pid {beat['pid']} on {beat['host']})" if "pid" in beat and "host" in beat else ""
    return (f"another train.py is already running in {output_dir}{who}; "
            f"wait for it to finish or stop it before starting this job again")


def _lock_is_held(output_dir):
    path = os.path.join(output_dir, LOCK_FILE)
    if not os.path.exists(path):
        return False
    try:
        fd = _open_lock_file(path, create=False)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return True
        raise
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def is_running(output_dir, now=None):
    """True while a train.py works on `output_dir`.

    On this host the lock decides (it dies with the process). A job on another host may
    sit on a file system where flock is not shared, so there a fresh heartbeat from that
    host counts as alive, unless the job has already finished or failed.
    """
    if _lock_is_held(output_dir):
        return True
    beat = read_heartbeat(output_dir)
    if not beat or beat.get("host") == socket.gethostname():
        return False
    if os.path.exists(os.path.join(output_dir, DONE_FILE)) or is_failed(output_dir):
        return False
    now = time.time() if now is None else now
    return now - float(beat.get("updated", 0)) < HEARTBEAT_FRESH_S


# ---------------------------------------------------------------------------------------
# Small JSON files

def _read_json(path):
    """The parsed file, or None if it is missing or not (yet) valid JSON."""
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def _write_json(path, obj):
    atomic_write_text(path, json.dumps(obj, sort_keys=True) + "\n")


def read_heartbeat(output_dir):
    """The heartbeat dict, or None when there is none."""
    beat = _read_json(os.path.join(output_dir, HEARTBEAT_FILE))
    return beat if isinstance(beat, dict) else None


def write_heartbeat(output_dir, step, n_steps, started, start_step=0):
    """Record progress: `step` steps of `n_steps` are done; `started` is this process's
    start time and `start_step` the step it resumed from (rate = steps since / time since)."""
    _write_json(os.path.join(output_dir, HEARTBEAT_FILE), {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "step": int(step),
        "n_steps": int(n_steps),
        "started": float(started),
        "updated": time.time(),
        "start_step": int(start_step),
    })


def is_failed(output_dir):
    return os.path.exists(os.path.join(output_dir, FAILED_FILE))


def read_failed(output_dir):
    """The `failed` dict ({"reason", "step"}), or None."""
    failed = _read_json(os.path.join(output_dir, FAILED_FILE))
    if failed is None and is_failed(output_dir):
        return {"reason": "unreadable 'failed' file", "step": None}
    return failed


def write_failed(output_dir, reason, step):
    _write_json(os.path.join(output_dir, FAILED_FILE),
                {"reason": str(reason), "step": None if step is None else int(step)})


def clear_failed(output_dir):
    try:
        os.remove(os.path.join(output_dir, FAILED_FILE))
    except FileNotFoundError:
        pass


def is_done(output_dir):
    return os.path.exists(os.path.join(output_dir, DONE_FILE))


# ---------------------------------------------------------------------------------------
# Job identity

def read_job_args(output_dir):
    job = _read_json(os.path.join(output_dir, JOB_FILE))
    return job.get("args") if isinstance(job, dict) else None


def _normalised(args):
    # Compare as JSON sees them (tuples become lists, keys are strings).
    return json.loads(json.dumps(args, sort_keys=True))


def _first_record_args(output_dir):
    """`args` of the first readable record in results.jsonl, or None."""
    try:
        with open(os.path.join(output_dir, RESULTS_FILE)) as f:
            for line in f:
                try:
                    return json.loads(line).get("args")
                except (json.JSONDecodeError, AttributeError):
                    continue
    except (FileNotFoundError, NotADirectoryError):
        pass
    return None


def _differences(stored, ours):
    differing = sorted(k for k in ours if stored.get(k) != ours[k])
    differing += sorted(k for k in stored if k not in ours)
    return ", ".join(f"{k}: {stored.get(k)!r} there, {ours.get(k)!r} here" for k in differing)


def check_job_identity(output_dir, identifying_args):
    """Raise JobIdentityError if `output_dir` holds another job. Writes nothing.

    The job is named by `job.json`; a directory written by upstream's train.py has none,
    and then the args of its records decide (only the identifying keys are compared).
    Returns True when job.json exists and matches, False when there is none yet.
    """
    ours = _normalised(identifying_args)
    stored = read_job_args(output_dir)
    if stored is None:
        if os.path.exists(os.path.join(output_dir, JOB_FILE)):
            raise JobIdentityError(
                f"{os.path.join(output_dir, JOB_FILE)} is unreadable; "
                f"use another --output_dir or delete that directory")
        record_args = _first_record_args(output_dir)
        if isinstance(record_args, dict):
            stored = {k: record_args.get(k) for k in ours}
        if stored is None or stored == ours:
            return False
    if stored != ours:
        raise JobIdentityError(
            f"{output_dir} belongs to another job ({_differences(stored, ours)}); "
            f"use another --output_dir, or delete that directory to start over")
    return True


def write_job_identity(output_dir, identifying_args):
    _write_json(os.path.join(output_dir, JOB_FILE), {"args": _normalised(identifying_args)})
