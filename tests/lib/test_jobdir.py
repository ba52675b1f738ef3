"""The job-directory protocol: lock, heartbeat, failed marker, job identity."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from domainbed.lib import jobdir

HOLD_LOCK = """
import sys, time
from domainbed.lib.jobdir import JobLock
with JobLock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_lock_is_exclusive_and_released(tmp_path):
    assert not jobdir.is_running(tmp_path)
    with jobdir.JobLock(tmp_path):
        assert jobdir.is_running(tmp_path)
        with pytest.raises(jobdir.JobRunningError, match="already running"):
            jobdir.JobLock(tmp_path).acquire()
    assert not jobdir.is_running(tmp_path)
    # The file stays behind; a stale .lock file must not block anybody.
    assert (tmp_path / jobdir.LOCK_FILE).exists()
    with jobdir.JobLock(tmp_path):
        pass


def test_lock_dies_with_a_killed_process(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert jobdir.is_running(tmp_path)
        with pytest.raises(jobdir.JobRunningError):
            jobdir.JobLock(tmp_path).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert not jobdir.is_running(tmp_path)


def test_is_running_does_not_create_files(tmp_path):
    assert not jobdir.is_running(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_heartbeat_round_trip(tmp_path):
    started = time.time() - 5
    jobdir.write_heartbeat(tmp_path, step=7, n_steps=20, started=started, start_step=3)
    beat = jobdir.read_heartbeat(tmp_path)
    assert beat["pid"] == os.getpid()
    assert (beat["step"], beat["n_steps"], beat["start_step"]) == (7, 20, 3)
    assert beat["started"] == pytest.approx(started)
    assert started < beat["updated"] <= time.time()
    assert {"pid", "host", "step", "n_steps", "started", "updated"} <= set(beat)
    assert not list(tmp_path.glob("*.tmp.*")), "atomic write left its temporary file"


def test_missing_or_torn_heartbeat_reads_as_none(tmp_path):
    assert jobdir.read_heartbeat(tmp_path) is None
    (tmp_path / jobdir.HEARTBEAT_FILE).write_text('{"pid": 1, "ho')
    assert jobdir.read_heartbeat(tmp_path) is None


def _beat_from(tmp_path, host, age_s):
    beat = {"pid": 1, "host": host, "step": 1, "n_steps": 9,
            "started": time.time() - age_s, "updated": time.time() - age_s}
    (tmp_path / jobdir.HEARTBEAT_FILE).write_text(json.dumps(beat))


def test_fresh_heartbeat_from_another_host_counts_as_running(tmp_path):
    _beat_from(tmp_path, "some-other-node", age_s=10)
    assert jobdir.is_running(tmp_path)
    jobdir.write_failed(tmp_path, "boom", 1)
    assert not jobdir.is_running(tmp_path)


def test_stale_or_local_heartbeat_without_lock_is_not_running(tmp_path):
    _beat_from(tmp_path, "some-other-node", age_s=jobdir.HEARTBEAT_FRESH_S + 1)
    assert not jobdir.is_running(tmp_path)
    import socket
    _beat_from(tmp_path, socket.gethostname(), age_s=1)  # our host: the lock decides
    assert not jobdir.is_running(tmp_path)


def test_failed_marker(tmp_path):
    assert not jobdir.is_failed(tmp_path)
    assert jobdir.read_failed(tmp_path) is None
    jobdir.write_failed(tmp_path, "non-finite loss", 12)
    assert jobdir.is_failed(tmp_path)
    assert jobdir.read_failed(tmp_path) == {"reason": "non-finite loss", "step": 12}
    jobdir.clear_failed(tmp_path)
    assert not jobdir.is_failed(tmp_path)
    jobdir.clear_failed(tmp_path)  # idempotent


def test_job_identity(tmp_path):
    args = {"dataset": "Debug28", "test_envs": (0, 1), "seed": 3}
    assert jobdir.check_job_identity(tmp_path, args) is False
    assert list(tmp_path.iterdir()) == []
    jobdir.write_job_identity(tmp_path, args)
    stored = json.loads((tmp_path / jobdir.JOB_FILE).read_text())
    assert stored == {"args": {"dataset": "Debug28", "test_envs": [0, 1], "seed": 3}}
    assert jobdir.check_job_identity(tmp_path, dict(args, test_envs=[0, 1])) is True
    (tmp_path / "results.jsonl").write_text(json.dumps({"step": 0}) + "\n")
    with pytest.raises(jobdir.JobIdentityError, match=r"seed: 3 there, 4 here"):
        jobdir.check_job_identity(tmp_path, dict(args, seed=4))


@pytest.mark.parametrize("data", [None, "checkpoint.pt", "model.pkl", "done"])
def test_a_directory_without_job_data_can_be_taken_over(tmp_path, data):
    # A run refused or crashed before its first record leaves job.json only: the corrected
    # command may use the directory. Anything of the first job's makes it refuse.
    jobdir.write_job_identity(tmp_path, {"seed": 3})
    (tmp_path / "results.jsonl").write_text("\n")
    if data:
        (tmp_path / data).write_text("x")
        with pytest.raises(jobdir.JobIdentityError, match="belongs to another job"):
            jobdir.check_job_identity(tmp_path, {"seed": 4})
    else:
        assert jobdir.check_job_identity(tmp_path, {"seed": 4}) is False


@pytest.mark.parametrize("content", ['{"foo": 1}\n', "[1, 2]\n", "\xff\xfe garbage\n",
                                     '{"args": {"seed": 3}}\n{"args": {"seed": 4}}\n'])
def test_foreign_results_file_without_job_json_is_refused(tmp_path, content):
    path = tmp_path / "results.jsonl"
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(jobdir.JobIdentityError, match="results.jsonl"):
        jobdir.check_job_identity(tmp_path, {"seed": 3})
    assert path.read_bytes() == content.encode("latin-1")


def test_fifo_results_file_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "results.jsonl")
    with pytest.raises(jobdir.JobIdentityError, match="not a regular file"):
        jobdir.check_job_identity(tmp_path, {"seed": 3})
    jobdir.write_job_identity(tmp_path, {"seed": 3})
    with pytest.raises(jobdir.JobIdentityError, match="not a regular file"):
        jobdir.check_job_identity(tmp_path, {"seed": 3})


def test_unreadable_job_file_is_refused(tmp_path):
    (tmp_path / jobdir.JOB_FILE).write_text("not json")
    with pytest.raises(jobdir.JobIdentityError, match="unreadable"):
        jobdir.check_job_identity(tmp_path, {"a": 1})


def test_identity_of_an_upstream_directory_comes_from_its_records(tmp_path):
    record_args = {"dataset": "Debug28", "seed": 3, "output_dir": str(tmp_path)}
    (tmp_path / "results.jsonl").write_text(json.dumps({"step": 0, "args": record_args}) + "\n")
    assert jobdir.check_job_identity(tmp_path, {"dataset": "Debug28", "seed": 3}) is False
    with pytest.raises(jobdir.JobIdentityError, match="seed: 3 there, 5 here"):
        jobdir.check_job_identity(tmp_path, {"dataset": "Debug28", "seed": 5})


# ---------------------------------------------------------------------------------------
# Garbage in the protocol files reads as "nothing there", never as an exception

@pytest.mark.parametrize("content", [
    '{"updated": "x", "step": "one", "host": 7, "pid": true, "n_steps": -3}',
    '[1, 2, 3]', '"just a string"', '\xff\xfe', '{"updated": NaN, "host": "h"}',
    '[' * 100000,
])
def test_garbage_heartbeat_fields_are_dropped(tmp_path, content):
    (tmp_path / jobdir.HEARTBEAT_FILE).write_bytes(content.encode("latin-1"))
    beat = jobdir.read_heartbeat(tmp_path)
    assert beat is None or beat == {} or set(beat) <= {"host"}
    assert not jobdir.is_running(tmp_path)


def test_heartbeat_from_the_future_is_not_fresh(tmp_path):
    _beat_from(tmp_path, "some-other-node", age_s=-(jobdir.HEARTBEAT_FRESH_S + 5))
    assert not jobdir.is_running(tmp_path)
    _beat_from(tmp_path, "some-other-node", age_s=-5)   # a slightly fast clock still counts
    assert jobdir.is_running(tmp_path)


def test_protocol_files_that_are_directories_or_fifos(tmp_path):
    for name in (jobdir.HEARTBEAT_FILE, jobdir.FAILED_FILE, jobdir.JOB_FILE):
        (tmp_path / name).mkdir()
    os.mkfifo(tmp_path / jobdir.LOCK_FILE)
    assert jobdir.read_heartbeat(tmp_path) is None
    assert not jobdir.is_running(tmp_path)
    assert jobdir.read_failed(tmp_path)["reason"] == "unreadable 'failed' file"
    with pytest.raises(jobdir.JobLockError, match="not a regular file"):
        jobdir.JobLock(tmp_path).acquire()


def test_lock_directory_is_a_clear_error(tmp_path):
    (tmp_path / jobdir.LOCK_FILE).mkdir()
    assert not jobdir.is_running(tmp_path)
    with pytest.raises(jobdir.JobLockError, match="remove it"):
        jobdir.JobLock(tmp_path).acquire()


def test_already_running_names_the_holder_before_any_heartbeat(tmp_path):
    with jobdir.JobLock(tmp_path):
        assert not (tmp_path / jobdir.HEARTBEAT_FILE).exists()
        with pytest.raises(jobdir.JobRunningError, match=rf"\(pid {os.getpid()} on "):
            jobdir.JobLock(tmp_path).acquire()


def test_read_records_file_is_tolerant(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_bytes(b'{"step": 0}\n\xff\n[1]\n\n{"step": 1}\n{"step": 2')
    lines = jobdir.read_records_file(str(path))
    assert [record for _, _, record in lines] == [{"step": 0}, None, None, {"step": 1}, None]
    assert [number for number, _, _ in lines] == [1, 2, 3, 5, 6]   # the blank line 4 counts
    assert jobdir.read_records_file(str(tmp_path / "missing")) == []


def test_failed_write_leaves_no_temporary(tmp_path, monkeypatch):
    def no_space(*args):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError):
        jobdir.write_failed(tmp_path, "x", 1)
    assert list(tmp_path.iterdir()) == []
    assert jobdir.try_write_failed(tmp_path, "disk full", 3)   # the plain write still fits
    assert jobdir.read_failed(tmp_path) == {"reason": "disk full", "step": 3}


def test_empty_failed_marker_says_the_disk_was_full(tmp_path):
    # On a nearly full disk try_write_failed's plain write can leave `failed` empty; it was
    # read back as "unreadable 'failed' file".
    (tmp_path / jobdir.FAILED_FILE).write_bytes(b"")
    reason = jobdir.read_failed(tmp_path)["reason"]
    assert "empty" in reason and "disk was full" in reason


def test_failed_marker_left_empty_by_a_full_disk(tmp_path, monkeypatch):
    import builtins

    def no_room(*args, **kwargs):
        raise OSError(28, "No space left on device")

    class FullFile:   # open() works, the write does not
        def __init__(self, path):
            self.f = real_open(path, "w")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        write = staticmethod(no_room)

    real_open = builtins.open
    monkeypatch.setattr(jobdir, "write_failed", no_room)
    monkeypatch.setattr(builtins, "open",
                        lambda path, mode="r", *a, **k: FullFile(path) if mode == "w"
                        else real_open(path, mode, *a, **k))
    assert jobdir.try_write_failed(str(tmp_path), "OSError: disk full", 3)
    monkeypatch.setattr(builtins, "open", real_open)
    assert (tmp_path / jobdir.FAILED_FILE).read_bytes() == b""
    assert "the disk was full" in jobdir.read_failed(tmp_path)["reason"]
