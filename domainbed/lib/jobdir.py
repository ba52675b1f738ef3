"""The job-directory protocol shared by `train.py` (writer) and `sweep` (reader).

Besides upstream's `out.txt`, `err.txt`, `results.jsonl`, `model.pkl` and `done`, a job's
output directory holds:

* `job.json`       `{"args": {...}}`: the train args that identify the job. A later start
                   with other identifying args is refused instead of mixing records.
* `.lock`          train.py holds an exclusive `flock` on it for its whole life (and writes
                   its pid and host into it). Anybody can test liveness by trying the same
                   non-blocking lock and releasing it.
* `heartbeat.json` `{"pid", "host", "step", "n_steps", "started", "updated", "start_step"}`
                   (unix times), rewritten atomically: liveness across hosts, progress, ETA.
* `failed`         `{"reason": "...", "step": N}` when the run stopped on an error.

Every reader here is tolerant: a missing, torn, garbage or non-regular file (a directory,
a FIFO) reads as "nothing there" instead of raising or blocking, and fields of the wrong
type are dropped. `read_records_file` is the one tolerant reader of `results.jsonl`, used by
the resume trim, the job-identity check and `collect_results`.

Torch-free on purpose: `sweep status` imports it to look at thousands of directories.
"""
import errno
import fcntl
import json
import math
import os
import socket
import stat
import time

from domainbed.errors import BadInput
from domainbed.lib import safe_write
from domainbed.lib.misc import atomic_write

JOB_FILE = "job.json"
LOCK_FILE = ".lock"
HEARTBEAT_FILE = "heartbeat.json"
FAILED_FILE = "failed"
DONE_FILE = "done"
RESULTS_FILE = "results.jsonl"
CHECKPOINT_FILE = "checkpoint.pt"

# A heartbeat younger than this counts as a live job on another host (train.py rewrites
# it at least every HEARTBEAT_PERIOD_S while training, and at every checkpoint). A heartbeat
# from further in the future than this (a wrong clock, or garbage) does not count either.
HEARTBEAT_FRESH_S = 600
HEARTBEAT_PERIOD_S = 30
SMALL_FILE_LIMIT = 1 << 20   # job.json, heartbeat.json, failed, .lock: bigger is garbage


class JobRunningError(BadInput, RuntimeError):
    """Another process holds the job's lock (exit 2: train.py refuses the directory)."""


class JobLockError(OSError):
    """The lock file cannot be opened or locked (not a file, no permission...). Internal:
    its callers decide (train.py refuses with its strerror, sweep's delete goes on)."""


class JobIdentityError(BadInput, ValueError):
    """The directory belongs to a job with other identifying args (or to somebody else);
    the message says what to do (exit 2)."""


class NotRegularFileError(OSError):
    """A protocol file that is a directory, a FIFO, a device...: never opened for reading.
    Internal: its readers treat the file as unreadable, or refuse it in words of their own."""


# ---------------------------------------------------------------------------------------
# Reading files without blocking or raising

def read_regular_file(path, limit=None):
    """The bytes of `path`, or None when it is missing or unreadable. Raises
    NotRegularFileError for something that is not a regular file (a FIFO would block a
    plain open()). `limit`: files larger than this many bytes read as None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        if e.errno == errno.EISDIR:
            raise NotRegularFileError(errno.EISDIR, "is a directory", path) from None
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotRegularFileError(errno.EINVAL, "is not a regular file", path)
        if limit is not None and info.st_size > limit:
            return None
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    except NotRegularFileError:
        raise
    except OSError:
        return None
    finally:
        os.close(fd)


def _parse_json_bytes(data):
    """The JSON value of `data` (bytes), or None when it is not UTF-8 JSON."""
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):   # UnicodeDecodeError, JSONDecodeError
        return None


def _read_json(path):
    """The parsed small file, or None if it is missing, not (yet) valid JSON, or not a
    regular file."""
    try:
        data = read_regular_file(path, SMALL_FILE_LIMIT)
    except NotRegularFileError:
        return None
    return None if data is None else _parse_json_bytes(data)


read_small_json = _read_json   # for other small JSON files of a job (sweep's launch.json)


def parse_record_bytes(line):
    """A results.jsonl line (bytes or str) as a dict, or None (torn, not UTF-8, not JSON,
    not an object)."""
    if isinstance(line, str):
        line = line.encode("utf-8", "surrogateescape")
    value = _parse_json_bytes(line)
    return value if isinstance(value, dict) else None


def read_records_file(path):
    """[(line number, line bytes, dict or None)] for every non-blank line of a
    results.jsonl (numbered from 1, blank lines counted); [] when the file is missing. Never raises on content (bad bytes, torn lines, JSON that is not
    an object read as None); raises NotRegularFileError for a FIFO, a directory, etc."""
    data = read_regular_file(path)
    if data is None:
        return []
    return [(number, line, parse_record_bytes(line))
            for number, line in enumerate(data.splitlines(keepends=True), start=1)
            if line.strip()]


# ---------------------------------------------------------------------------------------
# Writing small files atomically (no temporary left behind, even on a full disk)

def atomic_write_bytes(path, data):
    """Write through `path.tmp.<pid>` and a rename; the temporary is removed on failure."""
    atomic_write(path, lambda f: f.write(data))


def _write_json(path, obj):
    atomic_write_bytes(path, (json.dumps(obj, sort_keys=True) + "\n").encode("utf-8"))


# ---------------------------------------------------------------------------------------
# Lock

def _open_lock_file(path, create):
    """The lock file's descriptor, never through a link (a `.lock` link, even a dangling
    one, is refused: locking must not create or change a file outside the directory)."""
    flags = os.O_RDWR | (os.O_CREAT if create else 0)
    try:
        return safe_write.open_fd(path, flags, 0o644)
    except PermissionError:
        # A read-only view of somebody else's job: a shared lock attempt still tells us
        # whether an exclusive one is held.
        return safe_write.open_fd(path, os.O_RDONLY)


def _holds_a_holder_record(fd):
    """Whether the open lock file is empty (made by a start that stopped before writing)
    or holds exactly what write_holder writes: anything else is somebody else's file."""
    data = os.pread(fd, SMALL_FILE_LIMIT + 1, 0)
    if not data.strip():
        return True
    holder = _parse_json_bytes(data)
    return (isinstance(holder, dict) and set(holder) == {"pid", "host"}
            and isinstance(holder["pid"], int) and isinstance(holder["host"], str))


class JobLock:
    """`with JobLock(output_dir):` holds the job's exclusive lock or raises JobRunningError.

    The lock is an advisory `flock` on `output_dir/.lock`; the kernel drops it when the
    process dies, however it dies, so a stale `.lock` file never blocks a restart. The
    holder writes `{"pid", "host"}` into the file, so that "already running" can name it
    before the first heartbeat.
    """

    def __init__(self, output_dir):
        self.output_dir = output_dir
        self.path = os.path.join(output_dir, LOCK_FILE)
        self._fd = None
        self._created = []     # what acquire() made: folders, then the lock file

    def acquire(self, write_holder=True):
        """Take the lock (making the folder and the lock file if needed). `write_holder`
        False leaves an existing lock file unchanged until `write_holder()`."""
        missing, folder = [], os.path.abspath(self.output_dir)
        while not os.path.exists(folder):
            missing.append(folder)
            folder = os.path.dirname(folder)
        os.makedirs(self.output_dir, exist_ok=True)
        self._created = missing[::-1] + ([] if os.path.lexists(self.path) else [self.path])
        try:
            self._fd = self._lock()
        except BaseException:
            self._remove_created()
            raise
        if write_holder:
            self.write_holder()
        return self

    def _lock(self):
        try:
            fd = _open_lock_file(self.path, create=True)
        except safe_write.WriteRuleError as e:
            raise JobLockError(errno.ELOOP, str(e)) from None
        except OSError as e:
            raise JobLockError(e.errno, f"cannot open {self.path} ({e.strerror}); remove it "
                               "if it is not a file, or use another directory") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise JobLockError(errno.EINVAL, f"{self.path} is not a regular file; remove "
                                   "it, or use another directory")
            if not _holds_a_holder_record(fd):
                raise JobLockError(errno.EEXIST, f"{self.path} was not written by train.py "
                                   "(it is not a lock record of ours); move it away or use "
                                   "another directory")
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise JobRunningError(_already_running_message(self.output_dir)) from None
            raise
        return fd

    def write_holder(self):
        """Write {"pid", "host"} into the lock file, for "already running" messages."""
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, json.dumps({"pid": os.getpid(),
                                            "host": socket.gethostname()}).encode(), 0)
        except OSError:
            pass  # read-only lock file, full disk: the lock itself holds

    def release(self, remove_created=False):
        """Unlock. With `remove_created`, also remove what acquire() made (the lock file,
        and the folders it created if they are empty again): a job refused after taking
        its lock leaves the file system as it found it."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        if remove_created:
            self._remove_created()
        self._created = []

    def _remove_created(self):
        for path in reversed(self._created):
            try:
                if path == self.path:
                    os.remove(path)
                else:
                    os.rmdir(path)
            except OSError:
                break   # not empty (somebody else's files), or gone: leave the rest

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False


def _lock_holder(output_dir):
    holder = _read_json(os.path.join(output_dir, LOCK_FILE))
    return holder if isinstance(holder, dict) else {}


def _already_running_message(output_dir):
    who = ""
    for source in (read_heartbeat(output_dir) or {}, _lock_holder(output_dir)):
        pid, host = source.get("pid"), source.get("host")
        if isinstance(pid, int) and not isinstance(pid, bool) and isinstance(host, str):
            who = f" (pid {pid} on {host})"
            break
    return (f"another train.py is already running in {output_dir}{who}; "
            f"wait for it to finish or stop it before starting this job again")


def _lock_is_held(output_dir):
    path = os.path.join(output_dir, LOCK_FILE)
    try:
        fd = _open_lock_file(path, create=False)
    except OSError:  # missing, a directory, no permission: nobody can hold it
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
        return e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def heartbeat_is_fresh(beat, now=None):
    """A heartbeat updated less than HEARTBEAT_FRESH_S ago (and not from the future)."""
    if not beat or "updated" not in beat:
        return False
    now = time.time() if now is None else now
    return abs(now - beat["updated"]) < HEARTBEAT_FRESH_S


def is_running(output_dir, now=None):
    """True while a train.py works on `output_dir`.

    On this host the lock decides (it dies with the process). A job on another host may
    sit on a file system where flock is not shared, so there a fresh heartbeat from that
    host counts as alive, unless the job has already finished or failed.
    """
    if _lock_is_held(output_dir):
        return True
    beat = read_heartbeat(output_dir)
    if not beat or beat.get("host", socket.gethostname()) == socket.gethostname():
        return False
    if os.path.exists(os.path.join(output_dir, DONE_FILE)) or is_failed(output_dir):
        return False
    return heartbeat_is_fresh(beat, now)


# ---------------------------------------------------------------------------------------
# Heartbeat and `failed`

_HEARTBEAT_FIELDS = {"pid": int, "host": str, "step": int, "n_steps": int, "started": float,
                     "updated": float, "start_step": int}


def _valid_field(kind, value):
    if kind is str:
        return isinstance(value, str)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if kind is int:
        return isinstance(value, int) and value >= 0
    return math.isfinite(value)


def read_heartbeat(output_dir):
    """The heartbeat dict, or None when there is none. Fields of the wrong type (or
    negative counts) are left out, so every field present can be used as is."""
    beat = _read_json(os.path.join(output_dir, HEARTBEAT_FILE))
    if not isinstance(beat, dict):
        return None
    return {key: (float(beat[key]) if kind is float else beat[key])
            for key, kind in _HEARTBEAT_FIELDS.items()
            if key in beat and _valid_field(kind, beat[key])}


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
    path = os.path.join(output_dir, FAILED_FILE)
    failed = _read_json(path)
    if not isinstance(failed, dict):
        if not is_failed(output_dir):
            return None
        try:
            empty = os.path.isfile(path) and os.path.getsize(path) == 0
        except OSError:
            empty = False
        if empty:   # try_write_failed's plain write could open it but not write into it
            return {"reason": "the 'failed' marker is empty: the disk was full when the run "
                              "failed (see err.txt); free some space and rerun to resume",
                    "step": None}
        return {"reason": "unreadable 'failed' file", "step": None}
    step = failed.get("step")
    return {"reason": str(failed.get("reason")),
            "step": step if isinstance(step, int) and not isinstance(step, bool) else None}


def write_failed(output_dir, reason, step):
    _write_json(os.path.join(output_dir, FAILED_FILE),
                {"reason": str(reason), "step": None if step is None else int(step)})


def try_write_failed(output_dir, reason, step):
    """write_failed, falling back to a plain write (a full disk may still take a few
    bytes in place of a new temporary file). Returns True when `failed` exists after."""
    try:
        write_failed(output_dir, reason, step)
        return True
    except OSError:
        pass
    try:
        with safe_write.open_file(os.path.join(output_dir, FAILED_FILE), "w") as f:
            f.write(json.dumps({"reason": str(reason), "step": step}) + "\n")
    except OSError:
        pass
    return is_failed(output_dir)


def clear_failed(output_dir):
    try:
        os.remove(os.path.join(output_dir, FAILED_FILE))
    except FileNotFoundError:
        pass


def is_done(output_dir):
    return os.path.exists(os.path.join(output_dir, DONE_FILE))


def write_done(output_dir):
    atomic_write_bytes(os.path.join(output_dir, DONE_FILE), b"done")


# ---------------------------------------------------------------------------------------
# Job identity

def read_job_args(output_dir):
    job = _read_json(os.path.join(output_dir, JOB_FILE))
    args = job.get("args") if isinstance(job, dict) else None
    return args if isinstance(args, dict) else None


def normalised(args):
    """`args` as JSON sees them (tuples become lists, keys are strings): for comparing."""
    return json.loads(json.dumps(args, sort_keys=True))


_normalised = normalised


def _differences(stored, ours):
    differing = sorted(k for k in ours if stored.get(k) != ours[k])
    differing += sorted(k for k in stored if k not in ours)
    return ", ".join(f"{k}: {stored.get(k)!r} there, {ours.get(k)!r} here" for k in differing)


def _records_lines(output_dir):
    path = os.path.join(output_dir, RESULTS_FILE)
    try:
        return read_records_file(path)
    except NotRegularFileError:
        raise JobIdentityError(f"{path} is not a regular file; move it away or use another "
                               "--output_dir") from None


def holds_job_data(output_dir):
    """Whether the directory holds anything of a job worth keeping: a record line, a
    checkpoint, a model or `done`."""
    if any(os.path.lexists(os.path.join(output_dir, name))
           for name in (CHECKPOINT_FILE, "model.pkl", DONE_FILE)):
        return True
    try:
        return bool(read_records_file(os.path.join(output_dir, RESULTS_FILE)))
    except NotRegularFileError:
        return True


def _identity_from_records(output_dir, ours):
    """For a directory without job.json (upstream's train.py writes none): the identifying
    args its records carry, None when it has no records. A results.jsonl whose lines are
    not train.py records (no `args`) belongs to somebody else: refused, never trimmed."""
    path = os.path.join(output_dir, RESULTS_FILE)
    lines = _records_lines(output_dir)
    if not lines:
        return None
    stored = None
    for number, _, record in lines:
        if record is None:
            continue   # torn or corrupt: the resume trim keeps a copy of the file
        if not isinstance(record.get("args"), dict):
            raise JobIdentityError(
                f"{path} was not written by train.py (line {number} has no 'args'); "
                "move it away or use another --output_dir")
        args = {k: record["args"].get(k) for k in ours}
        if stored is None:
            stored = args
        elif args != stored:
            raise JobIdentityError(f"{path} holds records of several jobs; move it away or "
                                   "use another --output_dir")
    if stored is None:
        raise JobIdentityError(f"{path} holds no readable record of train.py; move it away "
                               "or use another --output_dir")
    return stored


# Files train.py writes (besides checkpoint.pt, which is set aside when unusable, and
# `done`, whose mere existence means done): a directory or a FIFO in their place is refused.
WRITTEN_FILES = (JOB_FILE, HEARTBEAT_FILE, FAILED_FILE, RESULTS_FILE, "out.txt", "err.txt",
                 "model.pkl")


def check_layout(output_dir):
    """Raise JobIdentityError when a file train.py writes is a symbolic link, a directory
    or a FIFO."""
    for name in (LOCK_FILE,) + OUR_NAMES:
        if os.path.islink(os.path.join(output_dir, name)):   # never written through
            raise JobIdentityError(f"{os.path.join(output_dir, name)} is a symbolic link; "
                                   "train.py never writes through one: remove it or use "
                                   "another --output_dir")
    for name in WRITTEN_FILES:
        path = os.path.join(output_dir, name)
        try:
            mode = os.stat(path).st_mode
        except OSError:
            continue
        if stat.S_ISDIR(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
            raise JobIdentityError(f"{path} is not a regular file; move it away or use "
                                   "another --output_dir")


# Every name train.py (or `sweep`, for a job directory) may write. A directory that holds
# one of them but no record of ours (`job.json`, `launch.json`, train.py records in
# `results.jsonl`) is somebody else's: refused, never written into.
OUR_NAMES = (JOB_FILE, HEARTBEAT_FILE, FAILED_FILE, DONE_FILE, RESULTS_FILE, CHECKPOINT_FILE,
             "out.txt", "err.txt", "model.pkl", "model_iid.pkl", "launch.json", "tensorboard")
OUR_PREFIXES = ("model_step", f"{CHECKPOINT_FILE}.", f"{RESULTS_FILE}.corrupt-")


# What a marker must hold to make a directory ours: its name alone proves nothing (a VS
# Code `launch.json` is not sweep's). job.json: {"args": {...}}; launch.json: sweep's record.
MARKER_KEYS = {JOB_FILE: {"args": dict}, "launch.json": {"launcher": str}}


def has_our_marker(output_dir):
    """Whether job.json or launch.json in `output_dir` says, by its content, it is ours."""
    return any(safe_write.read_marker(os.path.join(output_dir, name), keys) is not None
               for name, keys in MARKER_KEYS.items())


def _is_our_name(name):
    return name in OUR_NAMES or name.startswith(OUR_PREFIXES)


def foreign_files(output_dir):
    """The names of files we would write that `output_dir` holds although nothing in it
    says it is ours (no job.json, no launch.json, no train.py record); [] for a directory
    of ours, an empty or missing one, or one that holds only other names."""
    try:
        names = sorted(os.listdir(output_dir))
    except OSError:
        return []
    ours = [name for name in names if _is_our_name(name)]
    if not ours or has_our_marker(output_dir):
        return []
    try:
        lines = read_records_file(os.path.join(output_dir, RESULTS_FILE))
    except (NotRegularFileError, OSError):
        lines = []
    if any(record is not None and isinstance(record.get("args"), dict)
           for _, _, record in lines):
        return []   # upstream's train.py: records, no job.json
    return ours


def foreign_directory_message(output_dir, names, writer="train.py", flag="--output_dir"):
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return (f"{output_dir} was not written by {writer} (it holds {shown} but no job.json or "
            f"records of ours); move it away or use another {flag}")


def check_job_identity(output_dir, identifying_args):
    """Raise JobIdentityError if `output_dir` holds another job (or data that is not a
    job's). Writes nothing.

    The job is named by `job.json`; a directory written by upstream's train.py has none,
    and then the args of its records decide (only the identifying keys are compared). A
    directory that holds nothing of its job yet (no record, checkpoint, model or `done`;
    e.g. a run refused or crashed before its first step) may be taken over by another job.
    Returns True when job.json exists and matches, False when there is none yet (or when
    the directory is taken over).
    """
    ours = _normalised(identifying_args)
    check_layout(output_dir)
    if os.path.lexists(os.path.join(output_dir, JOB_FILE)):
        stored = read_job_args(output_dir)
        if stored is None:
            raise JobIdentityError(
                f"{os.path.join(output_dir, JOB_FILE)} is unreadable; "
                f"use another --output_dir or delete that directory")
        _records_lines(output_dir)   # a FIFO or a directory as results.jsonl is refused
    else:
        stored = _identity_from_records(output_dir, ours)
        if stored is None:   # no record: files we would write are somebody else's
            foreign = foreign_files(output_dir)
            if foreign:
                raise JobIdentityError(foreign_directory_message(output_dir, foreign))
            return False
        if stored == ours:
            return False
    if stored == ours:
        return True
    if not holds_job_data(output_dir):
        return False
    raise JobIdentityError(
        f"{output_dir} belongs to another job ({_differences(stored, ours)}); "
        f"use another --output_dir, or delete that directory to start over")


def write_job_identity(output_dir, identifying_args):
    _write_json(os.path.join(output_dir, JOB_FILE), {"args": _normalised(identifying_args)})


# ---------------------------------------------------------------------------------------
# Directories a study owns (reproduce, the unit-test suite): ours only by content

def holds_our_jobs(sweep_dir):
    """Whether `sweep_dir` holds a job directory whose job.json or launch.json proves, by
    its content, that a sweep of ours made it (an empty folder proves nothing)."""
    try:
        with os.scandir(sweep_dir) as entries:
            return any(entry.is_dir(follow_symlinks=False) and has_our_marker(entry.path)
                       for entry in entries)
    except OSError:
        return False


def output_dir_problem(directory, owner, names, sweep_dirs, flag="--output_dir"):
    """Why `owner` may not write into `directory`, or None. Ours: `owner`'s marker
    (safe_write.claim_directory) or a sweep of ours in one of `sweep_dirs`; a directory
    that is neither but holds one of `names` (what `owner` writes there) is somebody
    else's. One of `names` that is a symbolic link is never written through."""
    if os.path.lexists(directory) and not os.path.isdir(directory):
        return f"{flag} {directory} is not a directory; choose another {flag}"
    present = [name for name in names if os.path.lexists(os.path.join(directory, name))]
    links = [name for name in present if os.path.islink(os.path.join(directory, name))]
    if links:
        return (f"{os.path.join(directory, links[0])} is a symbolic link; {owner} never "
                f"writes through one: remove it or choose another {flag}")
    ours = safe_write.is_claimed(directory, owner) or any(
        holds_our_jobs(os.path.join(directory, sweep_dir)) for sweep_dir in sweep_dirs)
    if present and not ours:
        return (f"{directory} was not written by {owner} (it holds {', '.join(present)} but "
                f"no sweep of ours); move it away or choose another {flag}")
    return None
