"""command_launchers: the built-ins, user registration, plug-ins, and slurm via submitit."""
import os
import subprocess
import sys
import time

import pytest

from domainbed import command_launchers
from domainbed.lib.registry import UnknownNameError
import support

REPO_ROOT = str(support.REPO_ROOT)


def touch_commands(tmp_path, n):
    return [f"echo {i} > {tmp_path / f'out{i}.txt'}" for i in range(n)]


def test_registry_has_the_upstream_launchers_and_slurm():
    assert {"local", "dummy", "multi_gpu", "slurm"} <= set(command_launchers.REGISTRY)
    assert command_launchers.runs_jobs("local") and not command_launchers.runs_jobs("dummy")
    assert command_launchers.queues_jobs("slurm") and not command_launchers.queues_jobs("local")


def test_local_runs_every_command_even_after_a_failure(tmp_path):
    commands = ["exit 3"] + touch_commands(tmp_path, 2)
    command_launchers.REGISTRY["local"](commands)
    assert sorted(os.listdir(tmp_path)) == ["out0.txt", "out1.txt"]


def test_dummy_prints_and_runs_nothing(tmp_path, capsys):
    command_launchers.REGISTRY["dummy"](touch_commands(tmp_path, 2))
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and all(line.startswith("Dummy launcher: echo") for line in out)
    assert os.listdir(tmp_path) == []


def test_multi_gpu_slots_per_gpu(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,,5")
    # The variable is set for the command's environment (as for `python -m ...train`).
    commands = [f"sh -c 'echo $CUDA_VISIBLE_DEVICES' > {tmp_path / f'gpu{i}.txt'}"
                for i in range(4)]
    command_launchers.multi_gpu_launcher(commands, jobs_per_gpu=2, poll_s=0.01)
    assert "experimental multi_gpu_launcher" in capsys.readouterr().out
    gpus = sorted((tmp_path / f"gpu{i}.txt").read_text().strip() for i in range(4))
    assert set(gpus) <= {"3", "5"} and len(gpus) == 4


def test_multi_gpu_jobs_per_gpu_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setenv("DOMAINBED_JOBS_PER_GPU", "2")
    marker = tmp_path / "concurrent"
    # Both commands must be running at once to see each other's start file.
    commands = [f"touch {tmp_path}/start{i}; sleep 0.5; ls {tmp_path} > {marker}{i}"
                for i in range(2)]
    command_launchers.multi_gpu_launcher(commands, poll_s=0.01)
    assert "start1" in (tmp_path / "concurrent0").read_text()


def test_multi_gpu_without_gpus_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(command_launchers.LauncherError, match="no GPU visible"):
        command_launchers.multi_gpu_launcher(["true"], poll_s=0.01)


def test_register_launcher_and_unknown_names():
    calls = []

    @command_launchers.register_launcher("test_only_recorder")
    def recorder(commands):
        calls.extend(commands)

    try:
        command_launchers.get_launcher("test_only_recorder")(["a", "b"])
        assert calls == ["a", "b"]
        with pytest.raises(UnknownNameError, match="Did you mean 'test_only_recorder'"):
            command_launchers.get_launcher("test_only_recorde")
        with pytest.raises(KeyError):   # upstream's REGISTRY[name] contract still holds
            command_launchers.get_launcher("nope")
    finally:
        del command_launchers.REGISTRY["test_only_recorder"]


def test_plugin_module_from_environment(tmp_path):
    (tmp_path / "my_site_launchers.py").write_text(
        "from domainbed.command_launchers import register_launcher\n"
        "@register_launcher('site')\n"
        "def site(commands):\n"
        "    print('site launcher:', len(commands))\n")
    code = ("from domainbed import command_launchers as c; "
            "c.get_launcher('site')(['x', 'y'])")
    env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + str(tmp_path),
               DOMAINBED_PLUGINS="my_site_launchers")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, cwd=REPO_ROOT)
    assert result.stdout.strip() == "site launcher: 2", result.stderr


def test_launcher_args_parsing():
    assert command_launchers.parse_launcher_args('{"jobs_per_gpu": 2}') == {"jobs_per_gpu": 2}
    assert command_launchers.parse_launcher_args(None) == {}
    with pytest.raises(command_launchers.LauncherError, match="not valid JSON"):
        command_launchers.parse_launcher_args("{jobs")
    with pytest.raises(command_launchers.LauncherError, match="JSON object"):
        command_launchers.parse_launcher_args("[1]")


def test_slurm_options_precedence(monkeypatch):
    monkeypatch.setenv("DOMAINBED_SLURM_PARTITION", "gpu")
    monkeypatch.setenv("DOMAINBED_SLURM_MEM_GB", "64")
    options = command_launchers.slurm_options({"mem_gb": 16, "max_concurrent": 5})
    assert options["partition"] == "gpu" and options["mem_gb"] == 16
    assert options["max_concurrent"] == 5 and options["time_min"] == 24 * 60
    with pytest.raises(command_launchers.LauncherError, match="unknown option"):
        command_launchers.slurm_options({"partitoin": "x"})


def test_slurm_launcher_with_submitit_local_executor(tmp_path):
    pytest.importorskip("submitit")
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    commands = [f"echo {i} > {tmp_path / f'out{i}.txt'} # --output_dir {sweep_dir}/job{i}"
                for i in range(2)]
    jobs = command_launchers.slurm_launcher(commands, wait=True, cluster="local",
                                            time_min=5, gpus_per_node=0, cpus_per_task=1,
                                            mem_gb=1)
    assert len(jobs) == 2
    assert [(tmp_path / f"out{i}.txt").read_text().strip() for i in range(2)] == ["0", "1"]
    assert (sweep_dir / "slurm_logs").is_dir()   # logs default to SWEEP/slurm_logs


def test_shell_job_checkpoint_stops_the_command_and_resubmits(tmp_path):
    submitit = pytest.importorskip("submitit")
    job = command_launchers.ShellJob("sleep 30", grace_s=5)
    job.process = subprocess.Popen("sleep 30", shell=True, start_new_session=True)
    started = time.time()
    resubmission = job.checkpoint()
    assert job.process.poll() is not None and time.time() - started < 5
    assert isinstance(resubmission, submitit.helpers.DelayedSubmission)
    assert resubmission.function.command == "sleep 30"


def test_local_launcher_runs_jobs_side_by_side(tmp_path, capsys):
    from domainbed import command_launchers

    commands = [f"echo $OMP_NUM_THREADS > {tmp_path}/job{i}" for i in range(4)] + ["exit 3"]
    command_launchers.local_launcher(commands, jobs=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job0", "job1", "job2", "job3"]
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 5 and out[-1].startswith("[local x2] 5/5 jobs finished, 1 failed")


# ---------------------------------------------------------------------------------------
# Issue 12, case 10: the commands run with the launching interpreter, not PATH's `python`

RUN_LAUNCHER = """
import sys
from domainbed import command_launchers as c
out = sys.argv[2]
command = f"python -c 'import sys, domainbed; print(sys.executable)' > {out}"
kind = sys.argv[1]
if kind == "local":
    c.local_launcher([command])
elif kind == "parallel":
    c.local_launcher([command, "true"], jobs=2)
elif kind == "multi_gpu":
    c.multi_gpu_launcher([command], poll_s=0.01)
elif kind == "slurm_shell_job":
    c.ShellJob(command)()
"""


@pytest.fixture
def fake_python_first_on_path(tmp_path):
    """A PATH whose first `python` fails, as on a machine where the venv is not activated."""
    fake_bin = tmp_path / "fake_bin"
    fake_bin.mkdir()
    fake = fake_bin / "python"
    fake.write_text("#!/bin/sh\necho 'fake python: no domainbed here' >&2\nexit 1\n")
    fake.chmod(0o755)
    return str(fake_bin) + os.pathsep + os.environ.get("PATH", "")


@pytest.mark.parametrize("kind", ["local", "parallel", "multi_gpu", "slurm_shell_job"])
def test_commands_run_with_the_launching_interpreter(tmp_path, fake_python_first_on_path, kind):
    out = tmp_path / "ran_with.txt"
    env = dict(os.environ, PATH=fake_python_first_on_path, PYTHONPATH=REPO_ROOT,
               CUDA_VISIBLE_DEVICES="0")
    result = subprocess.run([sys.executable, "-c", RUN_LAUNCHER, kind, str(out)], env=env,
                            cwd=str(tmp_path), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "fake python" not in result.stderr
    ran_with = out.read_text().strip()
    assert os.path.realpath(ran_with) == os.path.realpath(sys.executable) or \
        os.path.samefile(os.path.dirname(ran_with), os.path.dirname(sys.executable))


def test_interpreter_env_uses_a_shim_when_no_python_is_beside_the_interpreter(tmp_path,
                                                                              monkeypatch):
    lone = tmp_path / "bin" / "python3.99"
    lone.parent.mkdir()
    lone.symlink_to(sys.executable)
    monkeypatch.setattr(sys, "executable", str(lone))
    monkeypatch.setattr(command_launchers, "_SHIM_DIR", [])
    env = command_launchers.interpreter_env({"PATH": "/usr/bin"})
    first = env["PATH"].split(os.pathsep)[0]
    assert first != str(lone.parent) and env["PATH"].endswith(os.pathsep + "/usr/bin")
    shim = os.path.join(first, "python")
    assert str(lone) in open(shim).read()
    result = subprocess.run(["python", "-c", "print(6 * 7)"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.stdout.strip() == "42"


def test_local_launcher_reports_failed_jobs(capsys):
    command_launchers.local_launcher(["exit 3", "true"])
    assert "[local] 1 of 2 jobs failed" in capsys.readouterr().out
