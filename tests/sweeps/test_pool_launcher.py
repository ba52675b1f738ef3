"""The `pool` launcher: the same records as `local`, job for job, and a killed worker
costs nothing (its job resumes from its checkpoint, nothing is lost or run twice)."""
import json
import os
import signal
import sys
import threading
import time

from domainbed import command_launchers, pool_launcher
from domainbed.scripts import sweep
from domainbed.sweeps.job_list import make_args_list
from domainbed.sweeps.jobs import Job

VOLATILE = ("step_time", "mem_gb")


def commands_for(output_dir, algorithms, steps, checkpoint_freq=None):
    jobs = []
    for train_args in make_args_list(
            n_trials=1, dataset_names=["RotatedMNIST5k"], algorithms=algorithms,
            n_hparams_from=0, n_hparams=2, steps=steps, data_dir="offline",
            task="domain_generalization", holdout_fraction=0.2, single_test_envs=True,
            hparams=None):
        if train_args["test_envs"] != [0]:
            continue
        if checkpoint_freq:
            train_args["checkpoint_freq"] = checkpoint_freq
        jobs.append(Job(train_args, str(output_dir)))
    return jobs


def read_records(job_dir):
    records = []
    with open(os.path.join(job_dir, "results.jsonl")) as f:
        for line in f:
            record = json.loads(line)
            for key in VOLATILE:
                record.pop(key)
            record["args"].pop("output_dir")
            records.append(record)
    return records


def test_pool_is_registered():
    assert command_launchers.get_launcher("pool") is pool_launcher.pool_launcher


def test_train_argv_parses_sweep_commands_only():
    assert pool_launcher.train_argv(
        "python -m domainbed.scripts.train --dataset X --test_envs 0 1") == [
        "--dataset", "X", "--test_envs", "0", "1"]
    assert pool_launcher.train_argv("echo hello") is None
    assert pool_launcher.train_argv("python -m domainbed.scripts.train 'unclosed") is None


def test_pool_records_equal_local_records(tmp_path, monkeypatch):
    monkeypatch.setattr(pool_launcher, "threads_per_worker", lambda n: 1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MKL_NUM_THREADS", "1")
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    local_jobs = commands_for(tmp_path / "local", ["ERM", "FGMix"], steps=6)
    pool_jobs = commands_for(tmp_path / "pool", ["ERM", "FGMix"], steps=6)
    assert len(local_jobs) == len(pool_jobs) == 4  # 2 algorithms x 2 hparam draws
    local_jobs, pool_jobs = local_jobs[1:3], pool_jobs[1:3]  # ERM draw 1, FGMix draw 0
    for jobs in (local_jobs, pool_jobs):
        for job in jobs:
            os.makedirs(job.output_dir)
    command_launchers.local_launcher([job.command_str for job in local_jobs], jobs=1)
    failures = pool_launcher.pool_launcher([job.command_str for job in pool_jobs], workers=2)
    assert failures == 0
    for local_job, pool_job in zip(local_jobs, pool_jobs):
        assert os.path.basename(local_job.output_dir) == os.path.basename(pool_job.output_dir)
        assert os.path.exists(os.path.join(pool_job.output_dir, "done"))
        local_records, pool_records = (read_records(local_job.output_dir),
                                       read_records(pool_job.output_dir))
        assert len(pool_records) == 2  # steps 0 and 5, the last
        assert pool_records == local_records


def test_pool_counts_failed_jobs_and_runs_shell_commands(tmp_path):
    marker = tmp_path / "ran"
    failures = pool_launcher.pool_launcher(
        [f"touch {marker}", "python -m domainbed.scripts.train --dataset NoSuchDataset "
                            f"--output_dir {tmp_path / 'bad'}"], workers=1)
    assert failures == 1 and marker.exists()


def test_killed_worker_job_is_resumed_not_lost_or_duplicated(tmp_path, monkeypatch):
    monkeypatch.setattr(pool_launcher, "threads_per_worker", lambda n: 1)
    (job,) = commands_for(tmp_path, ["ERM"], steps=3000, checkpoint_freq=50)[:1]
    os.makedirs(job.output_dir)
    result = {}
    runner = threading.Thread(target=lambda: result.setdefault(
        "failures", pool_launcher.pool_launcher([job.command_str], workers=1)))
    runner.start()
    heartbeat = os.path.join(job.output_dir, "heartbeat.json")
    killed_pid = None
    deadline = time.time() + 120
    while killed_pid is None and time.time() < deadline and runner.is_alive():
        try:
            with open(heartbeat) as f:
                beat = json.load(f)
        except (OSError, ValueError):
            beat = {}
        if beat.get("step", 0) >= 100:  # past a checkpoint, far from the end
            killed_pid = beat["pid"]
            os.kill(killed_pid, signal.SIGKILL)
        time.sleep(0.05)
    runner.join(timeout=300)
    assert killed_pid is not None, "the job finished before the worker could be killed"
    assert result["failures"] == 0
    assert os.path.exists(os.path.join(job.output_dir, "done"))
    with open(heartbeat) as f:
        assert json.load(f)["pid"] != killed_pid  # a new worker finished it
    steps = [record["step"] for record in read_records(job.output_dir)]
    assert steps == list(range(0, 3000, 50)) + [2999]
