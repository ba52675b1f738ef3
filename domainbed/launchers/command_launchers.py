"""Command launchers: functions that take a list of shell commands and run (or submit) them.

`REGISTRY[name](commands)` is upstream's interface. Built in:
* `local`: one after the other, in this process;
* `dummy`: runs nothing, prints `Dummy launcher: {cmd}` per command;
* `multi_gpu`: one queue, several slots per visible GPU (`jobs_per_gpu`, or the environment
  variable DOMAINBED_JOBS_PER_GPU; default 1), respecting CUDA_VISIBLE_DEVICES;
* `slurm`: one Slurm job array through submitit (see `slurm_launcher`).

A launcher may take keyword options; `sweep --launcher_args '{"jobs_per_gpu": 2}'` passes them.

Your own launcher: decorate a function with `@register_launcher("name")` in a module listed
in the environment variable DOMAINBED_PLUGINS (comma-separated import paths), or provide
upstream's optional `domainbed/facebook.py` with `register_command_launchers(REGISTRY)`.
Set `fn.runs_jobs = False` on a launcher that only pretends (like `dummy`), and
`fn.queues_jobs = True` on one that submits to a queue (like `slurm`); `sweep launch` uses
both to decide which incomplete jobs to launch again (see `sweep --help`).

`REGISTRY` is a `lib.registry.Registry` (the mechanism of the algorithm and dataset
registries: names read off the decorators here and in `launchers/pool.py`, plug-ins loaded
first) and a mapping like upstream's dict. A launcher that cannot run (no GPU, no
submitit, bad options) raises `LauncherError`; `sweep` turns it into one line.
"""
import atexit
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

from domainbed import settings
from domainbed.errors import EXIT_FAILURE, DomainBedError
from domainbed.lib import threads
from domainbed.lib.registry import Registry, load_plugins  # noqa: F401 (load_plugins: sweep's)

REGISTRY = Registry("command launcher", "domainbed.launchers", "register_launcher",
                    modules=("command_launchers", "pool"))


class LauncherError(DomainBedError, ValueError):
    """A launcher cannot run as asked (the message says what to do; exit 1, or 2 when
    `sweep` refuses its --launcher_args before anything is made)."""

    exit_code = EXIT_FAILURE


def register_launcher(name, runs_jobs=True, queues_jobs=False):
    """Decorator: make the function available as `--command_launcher name`."""
    def add(fn):
        fn.runs_jobs = getattr(fn, "runs_jobs", runs_jobs)
        fn.queues_jobs = getattr(fn, "queues_jobs", queues_jobs)
        return REGISTRY.register(fn, name=name)
    return add


def get_launcher(name):
    """The launcher registered as `name`, after loading plug-ins; a "did you mean" error."""
    return REGISTRY[name]


def runs_jobs(name):
    """Whether a launcher of this name really starts jobs (unknown names: assume it does)."""
    return getattr(REGISTRY.get(name), "runs_jobs", True)


def queues_jobs(name):
    return getattr(REGISTRY.get(name), "queues_jobs", False)


# ---------------------------------------------------------------------------------------
# The interpreter that runs the commands

_SHIM_DIR = []


def _python_shim_dir():
    """A private folder whose `python` runs this process's interpreter (created once)."""
    if not _SHIM_DIR:
        folder = tempfile.mkdtemp(prefix="domainbed-python-")
        atexit.register(shutil.rmtree, folder, True)
        shim = os.path.join(folder, "python")
        with open(shim, "w") as f:
            f.write(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} \"$@\"\n")
        os.chmod(shim, 0o755)
        _SHIM_DIR.append(folder)
    return _SHIM_DIR[0]


def interpreter_env(env=None):
    """`env` (default: os.environ) with PATH starting where `python` is the interpreter
    running this process. The job commands stay upstream's (`python -m domainbed.scripts.
    train ...`, hashed into the job directories), but the `python` that runs them is the one
    the user started the sweep with, even when it is not the first `python` on PATH (e.g.
    `.venv/bin/python -m domainbed.scripts.sweep launch` without activating the venv)."""
    env = dict(os.environ if env is None else env)
    if not sys.executable:
        return env
    folder = os.path.dirname(sys.executable)
    beside = os.path.join(folder, "python")
    if not (os.path.exists(beside)
            and os.path.realpath(beside) == os.path.realpath(sys.executable)):
        folder = _python_shim_dir()   # e.g. python3.11 started by full path, no `python` beside
    env["PATH"] = folder + os.pathsep + env.get("PATH", os.defpath)
    return env


# ---------------------------------------------------------------------------------------
# Built-in launchers

@register_launcher("local")
def local_launcher(commands, jobs=None):
    """Run the commands on this machine (a failed job does not stop the others).

    One at a time by default, as upstream, each with the console output of its train.py.
    With `jobs` > 1 (or DOMAINBED_LOCAL_JOBS) that many run side by side, each with an
    equal share of the usable cores; their console output is dropped (train.py keeps
    out.txt/err.txt in the job directory). Either way one progress line with an ETA is
    printed per finished job; threads follow lib/threads.py's policy.
    """
    commands = list(commands)
    jobs = int(jobs or settings.local_jobs())
    if jobs <= 1:
        _run_one_by_one(commands)
    else:
        _run_in_parallel(commands, jobs)


def _run_one_by_one(commands):
    env = interpreter_env(threads.job_env(jobs_at_once=1))
    progress = JobProgress("local", len(commands))
    for command in commands:
        progress.finished(subprocess.call(command, shell=True, env=env) != 0)
    if progress.failures:
        print(f"[local] {progress.failures} of {len(commands)} jobs failed; `sweep status` "
              "lists them, their err.txt says why", flush=True)


def _run_in_parallel(commands, jobs, poll_s=0.5):
    env = interpreter_env(threads.job_env(jobs_at_once=jobs))
    queue, running = list(commands), []
    progress = JobProgress(f"local x{jobs}", len(commands))
    while queue or running:
        while queue and len(running) < jobs:
            running.append(subprocess.Popen(queue.pop(0), shell=True, env=env,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for process in [p for p in running if p.poll() is not None]:
            running.remove(process)
            progress.finished(process.returncode != 0)
        time.sleep(poll_s)


class JobProgress:
    """One line per finished job with an ETA, for every launcher that runs jobs itself
    (`local`, `local` with N jobs, `pool`)."""

    def __init__(self, name, total):
        self.name, self.total = name, total
        self.done = self.failures = 0
        self.start = time.time()

    def finished(self, failed, note=None):
        self.done += 1
        self.failures += bool(failed)
        elapsed = time.time() - self.start
        eta = elapsed / self.done * (self.total - self.done)
        print(f"[{self.name}] {self.done}/{self.total} jobs finished"
              f"{f', {self.failures} failed' if self.failures else ''}; "
              f"elapsed {elapsed / 60:.1f} min, ETA {eta / 60:.1f} min"
              f"{f' ({note})' if note else ''}", flush=True)


@register_launcher("dummy", runs_jobs=False)
def dummy_launcher(commands):
    """Print each command instead of running it (for testing the sweep)."""
    for cmd in commands:
        print(f"Dummy launcher: {cmd}")


def visible_gpus():
    """CUDA_VISIBLE_DEVICES when set (empty items dropped), else every GPU torch sees."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [gpu for gpu in visible.split(",") if gpu.strip()]
    import torch  # only this launcher needs it, and only when the variable is unset
    return [str(i) for i in range(torch.cuda.device_count())]


@register_launcher("multi_gpu")
def multi_gpu_launcher(commands, jobs_per_gpu=None, poll_s=1.0):
    """Keep `jobs_per_gpu` jobs running on every visible GPU until the queue is empty."""
    print("WARNING: using experimental multi_gpu_launcher.")
    jobs_per_gpu = int(jobs_per_gpu or settings.jobs_per_gpu())
    gpus = visible_gpus()
    if not gpus or jobs_per_gpu < 1:
        raise LauncherError("multi_gpu launcher: no GPU visible (CUDA_VISIBLE_DEVICES / torch) or "
                         "jobs_per_gpu < 1; use --command_launcher local on a CPU machine")
    slots = [gpu for gpu in gpus for _ in range(jobs_per_gpu)]
    running = [None] * len(slots)
    env = interpreter_env(threads.job_env(jobs_at_once=max(1, len(slots))))
    queue = list(commands)
    while queue:
        for i, gpu in enumerate(slots):
            if running[i] is None or running[i].poll() is not None:
                running[i] = subprocess.Popen(f"CUDA_VISIBLE_DEVICES={gpu} {queue.pop(0)}",
                                              shell=True, env=env)
                break
        time.sleep(poll_s)
    for process in running:
        if process is not None:
            process.wait()


# ---------------------------------------------------------------------------------------
# Slurm (submitit)

# option -> environment variable (sweep --launcher_args JSON wins over these)
SLURM_ENV = {option: setting.name for option, setting in settings.SLURM.items()}
SLURM_DEFAULTS = {"time_min": 24 * 60, "gpus_per_node": 1, "cpus_per_task": 8, "mem_gb": 32,
                  "max_concurrent": 64, "cluster": None, "partition": None, "log_dir": None}
INT_OPTIONS = ("time_min", "gpus_per_node", "cpus_per_task", "mem_gb", "max_concurrent")


def slurm_options(overrides=None):
    """Defaults < environment variables < explicit options (from --launcher_args)."""
    options = dict(SLURM_DEFAULTS)
    options.update(settings.slurm_options())
    options.update({k: v for k, v in (overrides or {}).items() if v is not None})
    unknown = sorted(set(options) - set(SLURM_DEFAULTS))
    if unknown:
        raise LauncherError(f"slurm launcher: unknown option(s) {unknown}; "
                            f"known: {sorted(SLURM_DEFAULTS)}")
    for option in INT_OPTIONS:
        try:
            options[option] = int(options[option])
        except (TypeError, ValueError):
            raise LauncherError(f"slurm launcher: option {option} must be an integer, got "
                                f"{options[option]!r} (--launcher_args or {SLURM_ENV[option]})")
    return options


def sweep_dir_of(command):
    """The sweep directory of a train command (the parent of its --output_dir)."""
    words = shlex.split(command)
    if "--output_dir" in words:
        return os.path.dirname(words[words.index("--output_dir") + 1])
    return os.getcwd()


class ShellJob:
    """A submitit job that runs one shell command and is requeued on preemption/timeout.

    On preemption submitit calls `checkpoint()`: we pass SIGTERM on to the command (train.py
    then checkpoints and exits) and resubmit the same command, which resumes the job.
    """

    def __init__(self, command, grace_s=120):
        self.command = command
        self.grace_s = grace_s
        self.process = None

    def __call__(self):
        # Runs on the node, in submitit's interpreter (the launching one by default); the
        # threads come from the node's allocation (cpus_per_task), one job per task.
        self.process = subprocess.Popen(self.command, shell=True, start_new_session=True,
                                        env=interpreter_env(threads.job_env(jobs_at_once=1)))
        code = self.process.wait()
        if code != 0:
            raise RuntimeError(f"command exited with code {code}: {self.command}")
        return code

    def checkpoint(self, *args, **kwargs):
        import signal
        import submitit

        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=self.grace_s)
            except subprocess.TimeoutExpired:
                pass
        return submitit.helpers.DelayedSubmission(ShellJob(self.command, self.grace_s))


def _import_submitit():
    try:
        import submitit
    except ImportError:
        raise LauncherError("slurm launcher: needs submitit: pip install submitit "
                            "(or the package's [slurm] extra)")
    return submitit


@register_launcher("slurm", queues_jobs=True)
def slurm_launcher(commands, wait=False, **options):
    """Submit every command as one Slurm job array (submitit); returns the submitit jobs.

    Options (also from DOMAINBED_SLURM_* variables, see SLURM_ENV): partition, time_min,
    gpus_per_node, cpus_per_task, mem_gb, max_concurrent (array parallelism), log_dir
    (default SWEEP_DIR/slurm_logs), cluster (None = Slurm when available, "local" for
    tests). A preempted or timed-out job is requeued and train.py resumes it.
    """
    if not commands:
        return []
    submitit = _import_submitit()
    options = slurm_options(options)
    log_dir = options["log_dir"] or os.path.join(sweep_dir_of(commands[0]), "slurm_logs")
    executor = submitit.AutoExecutor(folder=os.path.join(log_dir, "%j"), cluster=options["cluster"])
    parameters = {"timeout_min": options["time_min"], "gpus_per_node": options["gpus_per_node"],
                  "cpus_per_task": options["cpus_per_task"], "mem_gb": options["mem_gb"],
                  "name": "domainbed"}
    if executor.cluster == "slurm":
        parameters["slurm_array_parallelism"] = options["max_concurrent"]
        if options["partition"]:
            parameters["slurm_partition"] = options["partition"]
    executor.update_parameters(**parameters)
    with executor.batch():
        jobs = [executor.submit(ShellJob(cmd)) for cmd in commands]
    print(f"slurm launcher: submitted {len(jobs)} jobs ({executor.cluster}); logs in {log_dir}")
    if wait:
        for job in jobs:
            job.exception()  # waits; failures are reported by the jobs' own files
    return jobs


# `sweep launch` checks --launcher_args with this before it makes any job directory.
slurm_launcher.check_options = lambda options: slurm_options(
    {k: v for k, v in options.items() if k != "wait"})


def parse_launcher_args(text):
    """The --launcher_args JSON object (a dict); a LauncherError otherwise."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as error:
        raise LauncherError(f"--launcher_args is not valid JSON ({error}); "
                            'example: --launcher_args \'{"jobs_per_gpu": 2}\'') from None
    if not isinstance(value, dict):
        raise LauncherError("--launcher_args must be a JSON object, e.g. "
                            '\'{"partition": "gpu"}\'')
    return value


# Upstream's hook for site-specific launchers (git-ignored upstream).
def _load_site_hook():
    import importlib
    import importlib.util

    if importlib.util.find_spec("domainbed.facebook") is None:
        return
    importlib.import_module("domainbed.facebook").register_command_launchers(REGISTRY)


_load_site_hook()
