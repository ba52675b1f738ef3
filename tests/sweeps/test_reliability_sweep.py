"""sweep under bad input and damaged job directories (issue 12, cases 3, 7 and 11).

In-process (`sweep.main`), synthetic job directories, no training."""
import json
import os
import socket
import time

import pytest

from domainbed.lib import jobdir
from domainbed.scripts import sweep
from domainbed.sweeps.job_list import make_args_list
from domainbed.sweeps.jobs import Job
from domainbed.sweeps.launch_records import _process_start_ticks, launcher_is_alive, read_launch_record
from domainbed.sweeps.status import INTERRUPTED, NOT_STARTED, QUEUED, detailed_state

DEBUG = ["--data_dir", "/tmp/no_data", "--algorithms", "ERM", "--datasets", "Debug28",
         "--n_hparams", "1", "--n_trials", "1", "--skip_confirmation"]


def run(capsys, command, output_dir, *extra):
    """(exit code, stdout, stderr) of sweep.main."""
    try:
        code = sweep.main([command, "--output_dir", str(output_dir), *DEBUG, *extra])
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    return code or 0, captured.out, captured.err


def assert_one_line_error(code, err, *hints):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "error: " in lines[0] and "Traceback" not in err
    for hint in hints:
        assert hint in lines[0], lines[0]


@pytest.mark.parametrize("extra, hints", [
    (["--hparams", '{"lrr": 1}'], ["--hparams: unknown hparam 'lrr'", "Did you mean 'lr'?",
                                   "ERM on Debug28"]),
    (["--hparams", '{"batch_size": 0}'], ["'batch_size' must be an integer in [1,"]),
    (["--hparams", '{"lr": NaN}'], ["'lr' must be a finite number"]),
    (["--hparams", "[1]"], ["--hparams must be a JSON object"]),
    (["--hparams", "{lr: 1}"], ["--hparams is not valid JSON"]),
    (["--hparams", "[" * 100000], ["--hparams is not valid JSON (nested too deeply)"]),
    (["--n_hparams_from", "-1"], ["--n_hparams_from must be >= 0"]),
    (["--holdout_fraction", "1.5"], ["--holdout_fraction must be in [0, 1)"]),
    (["--steps", "-2"], ["--steps must be >= 0"]),
    (["--task", "domain_adaptation"], ["--uda_holdout_fraction"]),
    (["--task", "domain_generalisation"], ["--task must be one of"]),
    (["--launcher_args", '{"jobz": 2}'], ["--launcher_args:", "'jobz'"]),
    (["--launcher_args", "[2]"], ["--launcher_args must be a JSON object"]),
])
def test_launch_refuses_bad_input_before_making_anything(tmp_path, capsys, extra, hints):
    out = tmp_path / "sweep"
    code, stdout, err = run(capsys, "launch", out, "--command_launcher", "local", *extra)
    assert_one_line_error(code, err, *hints)
    assert "Launched" not in stdout
    assert not out.exists()


def test_slurm_options_are_checked_before_launch(tmp_path, capsys):
    out = tmp_path / "sweep"
    code, _, err = run(capsys, "launch", out, "--command_launcher", "slurm",
                       "--launcher_args", '{"partitoin": "gpu"}')
    assert_one_line_error(code, err, "unknown option(s) ['partitoin']")
    code, _, err = run(capsys, "launch", out, "--command_launcher", "slurm",
                       "--launcher_args", '{"mem_gb": "lots"}')
    assert_one_line_error(code, err, "mem_gb must be an integer")
    assert not out.exists()


def test_valid_hparams_still_launch(tmp_path, capsys):
    out = tmp_path / "sweep"
    code, stdout, err = run(capsys, "launch", out, "--command_launcher", "dummy",
                            "--hparams", '{"lr": 0.01, "batch_size": 8}')
    assert code == 0, err
    assert "Launched 6 jobs!" in stdout


def test_output_dir_that_is_a_file(tmp_path, capsys):
    out = tmp_path / "sweep"
    out.write_text("x")
    code, _, err = run(capsys, "status", out)
    assert_one_line_error(code, err, "is a file")


def test_no_answer_on_stdin_is_one_line(tmp_path, capsys, monkeypatch):
    def closed(prompt):
        raise EOFError
    monkeypatch.setattr("builtins.input", closed)
    out = tmp_path / "sweep"
    argv = ["launch", "--output_dir", str(out), "--command_launcher", "dummy",
            *[a for a in DEBUG if a != "--skip_confirmation"]]
    with pytest.raises(SystemExit) as caught:
        sweep.main(argv)
    err = capsys.readouterr().err
    assert_one_line_error(caught.value.code, err, "--skip_confirmation")
    assert not out.exists()


# ---------------------------------------------------------------------------------------
# Damaged job directories: status and delete_incomplete never crash

@pytest.fixture(autouse=True)
def recorder_launcher():
    """A launcher that runs jobs (as far as sweep can tell) but starts nothing."""
    from domainbed import command_launchers

    command_launchers.register_launcher("test_recorder")(lambda commands: None)
    yield
    del command_launchers.REGISTRY["test_recorder"]


def launched(tmp_path, capsys, launcher="dummy"):
    out = tmp_path / "sweep"
    code, _, err = run(capsys, "launch", out, "--command_launcher", launcher)
    assert code == 0, err
    return out, sorted(out.iterdir())


def write(path, content):
    path.write_bytes(content if isinstance(content, bytes) else content.encode())


def damage(job_dirs):
    """Six kinds of garbage, one per job directory of the Debug28 sweep."""
    a, b, c, d, e, f = job_dirs
    write(a / "heartbeat.json", '{"updated": "x", "step": "one", "n_steps": [1], "host": 3}')
    write(b / "launch.json", '{"launcher": ["local"], "time": "soon"}')
    (c / ".lock").mkdir()
    write(c / "heartbeat.json", b"\xff\xfe")
    for child in d.iterdir():
        child.unlink()
    d.rmdir()
    write(d, "a file where a job directory should be")
    write(e / "heartbeat.json", json.dumps({   # from the future, another host
        "pid": 1, "host": "elsewhere", "step": 3, "n_steps": 5001, "started": time.time(),
        "updated": time.time() + 10 * jobdir.HEARTBEAT_FRESH_S, "start_step": 0}))
    write(f / "failed", "[not, json")
    return d


def test_status_and_delete_survive_garbage(tmp_path, capsys):
    out, job_dirs = launched(tmp_path, capsys, launcher="test_recorder")
    not_a_dir = damage(job_dirs)
    code, stdout, err = run(capsys, "status", out)
    assert code == 0 and err == "", err
    assert "6 jobs:" in stdout and "Running" not in stdout.split("6 jobs:")[0]
    assert "1 failed" in stdout and "reason: unreadable 'failed' file" in stdout

    code, stdout, err = run(capsys, "delete_incomplete", out, "--command_launcher", "dummy")
    assert code == 0 and err == "", err
    assert f"Not deleted (not a directory; remove it by hand if it is not needed): {not_a_dir}" \
        in stdout
    # b's launch.json is not sweep's (its "launcher" is no name): since issue 31 a
    # directory is ours only by what its marker says, so b is left as it is, with a note.
    assert f"Not deleted (not written by sweep or train.py" in stdout and str(job_dirs[1]) in stdout
    assert "Deleted 4 jobs!" in stdout
    assert sorted(p.name for p in out.iterdir()) == sorted([not_a_dir.name, job_dirs[1].name])
    assert not_a_dir.read_text() == "a file where a job directory should be"


def test_symlinked_job_directory_is_not_deleted(tmp_path, capsys):
    out, job_dirs = launched(tmp_path, capsys)
    elsewhere = tmp_path / "elsewhere"
    os.rename(job_dirs[0], elsewhere)
    os.symlink(elsewhere, job_dirs[0])
    code, stdout, _ = run(capsys, "delete_incomplete", out, "--command_launcher", "dummy")
    assert code == 0 and "Not deleted (a symbolic link" in stdout
    assert elsewhere.is_dir()


# ---------------------------------------------------------------------------------------
# Jobs a live `sweep launch` has not started yet are Queued, not Interrupted

def launch_record(job_dir, pid, pid_start, launched_at):
    write(job_dir / "launch.json", json.dumps({
        "launcher": "local", "time": launched_at, "pid": pid, "host": socket.gethostname(),
        "pid_start": pid_start}))


def test_jobs_waiting_in_a_live_launcher_are_queued(tmp_path, capsys):
    out, job_dirs = launched(tmp_path, capsys)
    me = os.getpid()
    my_start = _process_start_ticks(me)
    now = time.time()
    waiting, resumed_later, started_here, dead_launcher = job_dirs[:4]
    launch_record(waiting, me, my_start, now)
    launch_record(resumed_later, me, my_start, now)       # an older heartbeat: still waiting
    jobdir.write_heartbeat(resumed_later, 3, 10, started=now - 100)
    launch_record(started_here, me, my_start, now - 50)   # started after this launch: it ran
    jobdir.write_heartbeat(started_here, 3, 10, started=now - 10)
    launch_record(dead_launcher, 2**22 + 12345, 1, now)   # no such process
    jobdir.write_heartbeat(dead_launcher, 3, 10, started=now - 10)
    never_started = job_dirs[4]
    launch_record(never_started, 2**22 + 12345, 1, now)   # its launch stopped before it
    states = {job_dir: detailed_state(Job(args, str(out)))
              for args in make_args_list(1, ["Debug28"], ["ERM"], 0, 1, None,
                                               "/tmp/no_data", "domain_generalization", 0.2,
                                               False, None)
              for job_dir in [Job(args, str(out)).output_dir]}
    assert states[str(waiting)] == QUEUED
    assert states[str(resumed_later)] == QUEUED
    assert states[str(started_here)] == INTERRUPTED
    assert states[str(dead_launcher)] == INTERRUPTED
    assert states[str(never_started)] == NOT_STARTED   # issue 36: not "Interrupted step 0"


def test_status_says_not_started_and_launch_starts_them(tmp_path, capsys):
    out, job_dirs = launched(tmp_path, capsys)
    for job_dir in job_dirs:
        launch_record(job_dir, 2**22 + 12345, 1, time.time())   # a stopped `sweep launch`
    code, stdout, _ = run(capsys, "status", out)
    assert code == 0
    assert stdout.count("Not started: ") == len(job_dirs) and "Interrupted" not in stdout
    assert f"{len(job_dirs)} not started" in stdout
    code, stdout, _ = run(capsys, "launch", out, "--command_launcher", "dummy")
    assert f"Relaunching {len(job_dirs)} interrupted jobs" in stdout


def test_status_with_other_arguments_points_at_the_jobs_in_the_directory(tmp_path, capsys):
    out, job_dirs = launched(tmp_path, capsys)
    (job_dirs[0] / "done").write_text("")
    code, stdout, _ = run(capsys, "status", out, "--steps", "7")   # not the launch's
    assert code == 0 and f"{len(job_dirs)} not launched" in stdout
    assert (f"also holds {len(job_dirs)} job directories (1 done) that are not among these"
            in stdout) and "--steps" in stdout.split("Note:")[1]
    code, stdout, _ = run(capsys, "status", out)                   # the launch's: no note
    assert "Note:" not in stdout


def test_launch_record_names_the_launching_process(tmp_path, capsys):
    out, job_dirs = launched(tmp_path, capsys)
    record = read_launch_record(job_dirs[0])
    assert record["launcher"] == "dummy" and record["pid"] == os.getpid()
    assert record["host"] == socket.gethostname()
    assert launcher_is_alive(record)
