"""How many CPU threads a job uses, and how its OpenMP threads wait (torch-free).

Measured on 2 cores (docs/benchmarks.md, "Threads"): torch's default of one thread per
core is the fastest on an idle machine, but beside other busy processes its OpenMP threads
spin-wait for each other on oversubscribed cores and a run gets 5-10x slower. With
OMP_WAIT_POLICY=PASSIVE (threads sleep instead of spinning) the same two threads keep
nearly all of their idle speed and lose almost nothing under load. The policy, for every
way a job runs (train.py, `local`, `local` with N jobs, `pool`, `slurm`):

* threads = the cores this process may run on (os.sched_getaffinity: taskset, cgroups
  cpusets, a Slurm allocation) divided by the jobs running at once, at least 1;
* OMP_WAIT_POLICY=PASSIVE unless the environment sets a policy;
* overrides: DOMAINBED_THREADS=N, else OMP_NUM_THREADS=N, in the environment of the
  launching command (`sweep launch`, `reproduce`) or of one train.py; a launcher passes
  the count to its jobs as OMP_NUM_THREADS.

None of this enters a job's arguments, hash, command string or records; train.py prints
the choice as one `Threads:` line in out.txt.
"""
import os

from domainbed import settings

THREADS_VARIABLE = settings.THREADS.name
LOADER_WORKERS_VARIABLE = settings.LOADER_WORKERS.name
WAIT_POLICY = "PASSIVE"

# A thread or worker variable that is not a count (the message names it): the settings'
# error, under the name this module has always raised it by.
ThreadSettingError = settings.SettingError


def usable_cores():
    """The cores this process may run on (its CPU affinity), else the CPU count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):   # not Linux
        return max(1, os.cpu_count() or 1)


def threads_per_job(jobs_at_once=1, environ=None):
    """Threads for each of `jobs_at_once` jobs sharing this machine's usable cores:
    DOMAINBED_THREADS, else an OMP_NUM_THREADS the user set, else cores // jobs."""
    chosen = settings.threads(environ)
    if chosen is None:
        chosen = settings.whole_number("OMP_NUM_THREADS", 1, environ)
    if chosen is not None:
        return chosen
    return max(1, usable_cores() // max(1, jobs_at_once))


def job_env(env=None, jobs_at_once=1):
    """`env` (default os.environ) for a job process started beside `jobs_at_once - 1`
    others: its thread count in OMP_NUM_THREADS / MKL_NUM_THREADS, and the passive OpenMP
    wait unless the environment chose a policy."""
    env = dict(os.environ if env is None else env)
    threads = str(threads_per_job(jobs_at_once, env))
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = threads
    env.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)
    return env


def prepare_process():
    """Before torch is imported in this process: the passive OpenMP wait, unless the
    environment chose a policy (OpenMP reads it once, when it starts)."""
    import sys

    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)


def apply_to_torch():
    """torch's intra-op threads by the policy; returns the `Threads:` line of out.txt.

    DOMAINBED_THREADS is applied here; OMP_NUM_THREADS (a launcher's or the user's) torch
    has read itself when it started; otherwise torch's own default, one thread per usable
    core, stays, and so does a count a Python caller set before `domainbed.train`."""
    import torch

    override = settings.threads()
    if override is not None:
        torch.set_num_threads(override)
        source = THREADS_VARIABLE
    elif settings.whole_number("OMP_NUM_THREADS", 1) is not None:
        source = "OMP_NUM_THREADS"
    else:
        source = "torch's default"
    wait = os.environ.get("OMP_WAIT_POLICY", "OpenMP's default")
    return (f"Threads: {torch.get_num_threads()} ({source}; {usable_cores()} usable cores; "
            f"OpenMP wait {wait}; override: {THREADS_VARIABLE}=N)")


def loader_workers(dataset_workers):
    """Data-loader worker processes for a dataset asking for `dataset_workers` (upstream's
    8 for image datasets, 0 for tensors in memory): DOMAINBED_LOADER_WORKERS when set,
    else no more than the usable cores (8 workers on 2 cores only contend)."""
    if not dataset_workers:
        return 0
    override = settings.loader_workers()
    if override is not None:
        return override
    return min(dataset_workers, usable_cores())
