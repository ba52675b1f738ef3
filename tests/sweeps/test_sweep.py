"""scripts/sweep: upstream's job model and printed lines, liveness, relaunch, status."""
import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from unittest import mock

import pytest

from domainbed.scripts import sweep
from domainbed.sweeps.job_list import all_test_env_combinations, make_args_list
from domainbed.sweeps.jobs import Job, command_string
import support

REPO_ROOT = str(support.REPO_ROOT)
DEBUG_ARGS = ["--data_dir", "/tmp/no_data", "--algorithms", "ERM", "--datasets", "Debug28",
              "--n_hparams", "1", "--n_trials", "1", "--skip_confirmation"]


def run_sweep(command, output_dir, *args, env_extra=None):
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    env.update(env_extra or {})
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return subprocess.run(
        [sys.executable, "-m", "domainbed.scripts.sweep", command, "--output_dir",
         str(output_dir), *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True)


def dummy_lines(result):
    return [line for line in result.stdout.splitlines() if line.startswith("Dummy launcher:")]


# ---------------------------------------------------------------------------------------
# Upstream's unit tests

def test_job(tmp_path):
    job = Job({"foo": "bar"}, str(tmp_path))
    assert job.output_dir.startswith(str(tmp_path))
    assert job.state == Job.NOT_LAUNCHED
    assert job.command_str == (
        f"python -m domainbed.scripts.train --foo bar --output_dir {job.output_dir}")


def test_job_launch_and_delete(tmp_path):
    job = Job({"foo": "bar"}, str(tmp_path))
    launcher_fn = mock.MagicMock()
    Job.launch([job], launcher_fn)
    launcher_fn.assert_called_once_with([job.command_str])
    assert Job({"foo": "bar"}, str(tmp_path)).state == Job.INCOMPLETE
    Job.delete([job])
    assert Job({"foo": "bar"}, str(tmp_path)).state == Job.NOT_LAUNCHED


def test_done_state_and_str(tmp_path):
    job = Job({"dataset": "VLCS", "algorithm": "ERM", "test_envs": [1, 2],
                     "hparams_seed": 1}, str(tmp_path))
    os.makedirs(job.output_dir)
    with open(os.path.join(job.output_dir, "done"), "w") as f:
        f.write("done")
    job = Job({"dataset": "VLCS", "algorithm": "ERM", "test_envs": [1, 2],
                     "hparams_seed": 1}, str(tmp_path))
    assert str(job) == f"Done: {job.output_dir} ('VLCS', 'ERM', [1, 2], 1)"


def test_job_hash_matches_upstream():
    train_args = {"algorithm": "ERM", "data_dir": "/checkpoint/dlp/datasets_new",
                  "dataset": "VLCS", "holdout_fraction": 0.2, "hparams_seed": 1,
                  "seed": 360234358, "steps": 1001, "task": "domain_generalization",
                  "test_envs": [1, 2], "trial_seed": 0}
    job = Job(train_args, "/out")
    assert job.output_dir == "/out/0657090f9a83ff76efe083a104fde93a"
    assert job.command_str.endswith(
        "--steps 1001 --task domain_generalization --test_envs 1 2 --trial_seed 0")


def test_command_string_quotes_strings():
    command = command_string({"hparams": '{"lr": 0.1}', "holdout_fraction": 0.2})
    assert command == ("python -m domainbed.scripts.train --holdout_fraction 0.2 "
                       "--hparams '{\"lr\": 0.1}'")


def test_make_args_list():
    args_list = make_args_list(
        n_trials=2, dataset_names=["Debug28"], algorithms=["ERM"], n_hparams_from=0,
        n_hparams=3, steps=None, data_dir="/tmp/data", task="domain_generalization",
        holdout_fraction=0.2, single_test_envs=False, hparams=None)
    assert len(args_list) == 36
    assert [a["test_envs"] for a in args_list[:7:3]] == [[0], [0, 1], [0, 2]]
    assert [a["hparams_seed"] for a in args_list[:4]] == [0, 1, 2, 0]
    assert "steps" not in args_list[0] and "hparams" not in args_list[0]
    from domainbed.lib.misc import seed_hash
    assert args_list[4]["seed"] == seed_hash("Debug28", "ERM", [0, 1], 1, 0)


def test_test_env_combinations():
    assert list(all_test_env_combinations(3)) == [[0], [0, 1], [0, 2], [1], [1, 2], [2]]
    assert [len(list(all_test_env_combinations(n))) for n in (4, 5, 6, 10)] == [10, 15, 21, 55]


def test_end_to_end_dummy_launcher(tmp_path):
    result = run_sweep("launch", tmp_path, *DEBUG_ARGS, "--command_launcher", "dummy")
    assert result.returncode == 0, result.stderr
    assert len(dummy_lines(result)) == 6
    assert "6 jobs: 0 done, 0 incomplete, 6 not launched." in result.stdout
    assert "About to launch 6 jobs." in result.stdout and "Launched 6 jobs!" in result.stdout

    result = run_sweep("launch", tmp_path, *DEBUG_ARGS, "--command_launcher", "dummy")
    assert len(dummy_lines(result)) == 0
    assert "6 jobs: 0 done, 6 incomplete, 0 not launched." in result.stdout

    result = run_sweep("delete_incomplete", tmp_path, *DEBUG_ARGS, "--command_launcher", "dummy")
    assert "Deleted 6 jobs!" in result.stdout
    result = run_sweep("launch", tmp_path, *DEBUG_ARGS, "--command_launcher", "dummy")
    assert len(dummy_lines(result)) == 6


def test_confirmation_refused(tmp_path):
    args = [a for a in DEBUG_ARGS if a != "--skip_confirmation"]
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "domainbed.scripts.sweep", "launch", "--output_dir", str(tmp_path),
         *args, "--command_launcher", "dummy"], input="n\n", cwd=REPO_ROOT, env=env,
        capture_output=True, text=True)
    assert result.returncode == 0
    assert "Nevermind!" in result.stdout and not dummy_lines(result)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("flag, value, hint", [
    ("--algorithms", "ERMM", "Did you mean 'ERM'?"),
    ("--datasets", "Debug82", "Did you mean 'Debug28'?"),
    ("--command_launcher", "dumy", "Did you mean 'dummy'?"),
])
def test_unknown_names(tmp_path, flag, value, hint):
    args = {"--algorithms": "ERM", "--datasets": "Debug28", "--command_launcher": "dummy"}
    args[flag] = value
    flat = [x for pair in args.items() for x in pair]
    result = run_sweep("launch", tmp_path, "--data_dir", "/d", *flat, "--skip_confirmation")
    assert result.returncode != 0
    assert hint in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------
# Liveness, relaunch and status (synthetic job directories; no training)

RECORDER_PLUGIN = textwrap.dedent("""
    import json, os
    from domainbed.command_launchers import register_launcher

    def _record(commands):
        with open(os.environ["RECORDED_COMMANDS"], "a") as f:
            for command in commands:
                f.write(command + "\\n")

    register_launcher("recorder")(lambda commands: _record(commands))
    register_launcher("queue", queues_jobs=True)(lambda commands: _record(commands))
""")


@pytest.fixture
def recorder(tmp_path):
    plugin_dir = tmp_path / "plugin"
    plugin_dir.mkdir()
    (plugin_dir / "sweep_test_recorder.py").write_text(RECORDER_PLUGIN)
    log = tmp_path / "commands.txt"
    env = {"DOMAINBED_PLUGINS": "sweep_test_recorder", "RECORDED_COMMANDS": str(log),
           "PYTHONPATH": REPO_ROOT + os.pathsep + str(plugin_dir)}

    def launch(output_dir, launcher="recorder", command="launch"):
        if log.exists():
            log.unlink()
        result = run_sweep(command, output_dir, *DEBUG_ARGS, "--command_launcher", launcher,
                           env_extra=env)
        assert result.returncode == 0, result.stderr
        commands = log.read_text().splitlines() if log.exists() else []
        return result, [c.split("--output_dir ")[1].split()[0] for c in commands]
    return launch


def hold_lock(job_dir):
    """Hold the job's lock as a running train.py would; returns the open file."""
    handle = open(os.path.join(job_dir, ".lock"), "w")
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return handle


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f)


def heartbeat(job_dir, step, n_steps=5001, host=None, updated=None, start_step=0):
    now = time.time()
    write_json(os.path.join(job_dir, "heartbeat.json"), {
        "pid": 1, "host": host or socket.gethostname(), "step": step, "n_steps": n_steps,
        "started": now - 100, "updated": updated or now, "start_step": start_step})


def test_delete_incomplete_spares_running_jobs(tmp_path):
    out = tmp_path / "sweep"
    run_sweep("launch", out, *DEBUG_ARGS, "--command_launcher", "dummy")
    job_dirs = sorted(p for p in out.iterdir())
    lock = hold_lock(job_dirs[0])
    remote = job_dirs[1]
    heartbeat(remote, 10, host="another-host")
    try:
        result = run_sweep("delete_incomplete", out, *DEBUG_ARGS, "--command_launcher", "dummy")
    finally:
        lock.close()
    assert result.returncode == 0, result.stderr
    assert "Not deleting 2 running jobs" in result.stdout
    assert "Deleted 4 jobs!" in result.stdout
    assert sorted(out.iterdir()) == job_dirs[:2]


def test_relaunch_after_kill_runs_only_the_unfinished(tmp_path, recorder):
    out = tmp_path / "sweep"
    _, first = recorder(out)
    assert len(first) == 6
    assert all(json.loads((out / os.path.basename(d) / "launch.json").read_text())["launcher"]
               == "recorder" for d in first)
    done, failed, running, interrupted, never_started, remote = sorted(out.iterdir())
    (done / "done").write_text("done")
    write_json(failed / "failed", {"reason": "non-finite loss", "step": 3})
    heartbeat(interrupted, 300)
    heartbeat(remote, 200, host="another-host")
    lock = hold_lock(running)
    try:
        result, second = recorder(out)
    finally:
        lock.close()
    assert sorted(os.path.basename(d) for d in second) == sorted(
        [interrupted.name, never_started.name])
    assert "Relaunching 2 interrupted jobs" in result.stdout
    assert "About to launch 2 jobs." in result.stdout
    # The relaunched jobs now resume (here: finish); a third launch has nothing to do.
    for job_dir in (interrupted, never_started, remote, running):
        (job_dir / "done").write_text("done")
    _, third = recorder(out)
    assert third == []


def test_queued_jobs_are_not_submitted_twice(tmp_path, recorder):
    out = tmp_path / "sweep"
    _, first = recorder(out, launcher="queue")
    assert len(first) == 6
    started = sorted(out.iterdir())[0]
    heartbeat(started, 50)   # preempted after it started: resume it
    _, second = recorder(out, launcher="queue")
    assert [os.path.basename(d) for d in second] == [started.name]


def test_status(tmp_path, recorder):
    out = tmp_path / "sweep"
    recorder(out)
    done, failed, running, interrupted, _, _ = sorted(out.iterdir())
    (done / "done").write_text("done")
    write_json(failed / "failed", {"reason": "non-finite loss", "step": 3})
    heartbeat(interrupted, 1000)
    heartbeat(running, 2100, start_step=100)   # 2000 steps in 100 s = 20 steps/s
    lock = hold_lock(running)
    try:
        result, launched = recorder(out, command="status")
    finally:
        lock.close()
    assert launched == []
    assert f"Running: {running}" in result.stdout and "step 2100/5001 (42%)" in result.stdout
    assert "reason: non-finite loss" in result.stdout
    # The two jobs the stopped launch never started are not "Interrupted ... step 0".
    assert ("6 jobs: 1 done, 1 running, 0 queued, 1 interrupted, 2 not started, 1 failed, "
            "0 incomplete, 0 not launched.") in result.stdout
    assert "Progress: 8101 of 30006 steps (27.0%)." in result.stdout
    # (30006 - 8101) steps / 20 steps/s = 1095 s
    assert "ETA: 18m at the current rate (1 running jobs, 20.00 steps/s in total" in result.stdout


def test_sweep_and_status_are_torch_free(fresh_python, tmp_path):
    code = ("import sys; from domainbed.scripts import sweep; "
            f"sweep.main(['status', '--output_dir', {str(tmp_path)!r}, '--data_dir', 'd', "
            "'--datasets', 'Debug28', '--algorithms', 'ERM', '--n_trials', '1', "
            "'--n_hparams', '1']); print('torch' in sys.modules)")
    result = fresh_python(code)
    assert result.stdout.strip().splitlines()[-1] == "False"


# ---------------------------------------------------------------------------------------
# With real training. The whole two-launcher sweep is slow on a shared CPU (24 train.py
# runs): it is opt-in (DOMAINBED_SLOW_TESTS=1); the test before it covers the same path
# with 8 runs.

def sweep_and_collect(out, launcher, *launcher_flags, algorithms=("ERM", "Mixup"), launched,
                      hparams=()):
    """A real sweep on Debug28 (3 steps, every test-env pair), then the tables; the sweep
    must launch `launched` jobs and leave every job done."""
    args = ["--data_dir", "unused", "--algorithms", *algorithms, "--datasets",
            "Debug28", "--n_hparams", "1", "--n_trials", "1", "--steps", "3", *hparams,
            "--skip_confirmation", "--command_launcher", launcher, *launcher_flags]
    result = run_sweep("launch", out, *args,
                       env_extra={"OMP_NUM_THREADS": "1", "DOMAINBED_LOCAL_JOBS": "2"})
    assert result.returncode == 0, result.stderr
    assert f"About to launch {launched} jobs." in result.stdout
    status = run_sweep("status", out, *args)
    n_jobs = 6 * len(algorithms)
    assert f"{n_jobs} jobs: {n_jobs} done" in status.stdout
    collected = subprocess.run(
        [sys.executable, "-m", "domainbed.scripts.collect_results", "--input_dir", str(out)],
        cwd=REPO_ROOT, env=dict(os.environ, PYTHONPATH=REPO_ROOT), capture_output=True, text=True)
    assert collected.returncode == 0, collected.stderr
    return collected.stdout


SLURM_LOCAL = ["--launcher_args", '{"cluster": "local", "wait": true}']


def test_slurm_finishes_a_local_sweep_and_the_tables_do_not_change(tmp_path):
    """A real sweep (ERM: 6 jobs, small batches; the pool launcher's one warm worker, which
    test_pool_launcher.py shows writes the local launcher's records); in a copy, one single-
    and one two-test-env job are deleted and the slurm launcher (submitit's local executor)
    runs them again."""
    pytest.importorskip("submitit")
    small = ("--hparams", '{"batch_size": 8}')
    local = sweep_and_collect(tmp_path / "local", "pool", "--launcher_args", '{"workers": 1}',
                              algorithms=("ERM",), launched=6, hparams=small)
    assert "Total records: 12" in local   # steps 0 and 2 for 6 jobs
    assert " X " not in local             # all three selection methods have every cell
    assert sum(line.startswith("ERM ") for line in local.splitlines()) == 6
    copy = tmp_path / "slurm"
    shutil.copytree(tmp_path / "local", copy)
    by_n_test_envs = {}
    for job in sorted(copy.iterdir()):
        if (job / "done").exists():
            record = json.loads((job / "results.jsonl").read_text().splitlines()[0])
            by_n_test_envs.setdefault(len(record["args"]["test_envs"]), job)
    for job in by_n_test_envs.values():
        shutil.rmtree(job)
    slurm = sweep_and_collect(copy, "slurm", *SLURM_LOCAL, algorithms=("ERM",), launched=2,
                              hparams=small)
    assert slurm == local   # same jobs, same seeds: the same tables, whatever the launcher


@pytest.mark.slow
def test_end_to_end_sweep_local_and_slurm_collect_identically(tmp_path):
    pytest.importorskip("submitit")
    local = sweep_and_collect(tmp_path / "local", "local", launched=12)
    assert "Total records: 24" in local   # steps 0 and 2 for 12 jobs
    assert " X " not in local             # all three selection methods have every cell
    assert sum(line.startswith(("ERM ", "Mixup ")) for line in local.splitlines()) == 12
    slurm = sweep_and_collect(tmp_path / "slurm", "slurm", *SLURM_LOCAL, launched=12)
    assert slurm == local   # same jobs, same seeds: the same tables, whatever the launcher
