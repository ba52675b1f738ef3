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
    with pytest.raises(jobdir.JobIdentityError, match=r"seed: 3 there, 4 here"):
        jobdir.check_job_identity(tmp_path, dict(args, seed=4))


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
