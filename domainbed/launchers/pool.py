"""The `pool` command launcher: many short train jobs in warm worker processes.

    sweep launch ... --command_launcher pool        # DOMAINBED_POOL_WORKERS=N (default: CPUs)

A small model trains in seconds, while a new `python -m domainbed.scripts.train` process
spends about three seconds importing torch and building its dataset. Each pool worker is a
Python process of the interpreter running the sweep (multiprocessing's `spawn`) that imports
torch and `domainbed.training` once, then runs one job after another as train.py does
(its parser, then `run_job`); the offline datasets cache their environments per process,
so a worker builds each of them once.

Records are the ones the `local` launcher's processes write: `run_job` seeds every RNG
at its start, exactly as a fresh process does, and each worker uses usable cores // workers
threads with the passive OpenMP wait (lib/threads.py; DOMAINBED_THREADS overrides), as
`local` with DOMAINBED_LOCAL_JOBS does (tests/sweeps/test_pool_launcher.py compares them job for
job). Console output is dropped; train.py keeps out.txt and err.txt in the job
directory.

A worker that dies (killed, out of memory) is replaced and its job handed out again:
train.py resumes it from its last checkpoint (the job lock died with the worker), so nothing
is lost and nothing runs twice. A job that kills MAX_ATTEMPTS workers is given up and
counted as failed. Commands that are not train.py commands run in a shell, as with `local`.
"""
import collections
import multiprocessing
import multiprocessing.connection
import os
import shlex
import subprocess
import sys

from domainbed import settings
from domainbed.errors import DomainBedError
from domainbed.launchers.command_launchers import JobProgress, register_launcher
from domainbed.lib.threads import prepare_process, threads_per_job

TRAIN_PREFIX = ["python", "-m", "domainbed.scripts.train"]
MAX_ATTEMPTS = 3


def train_argv(command):
    """The train.py arguments of a sweep's command string, or None for another command."""
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    return words[len(TRAIN_PREFIX):] if words[:len(TRAIN_PREFIX)] == TRAIN_PREFIX else None


def threads_per_worker(n_workers):
    return threads_per_job(n_workers)


# ---------------------------------------------------------------------------------------
# Worker side

def _run_one(command, training):
    argv = train_argv(command)
    if argv is None:
        env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep
               + os.environ.get("PATH", "")}
        return subprocess.call(command, shell=True, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return training.run_job(training.parse_command_line(argv))
    except SystemExit as e:  # argparse's usage errors
        return e.code if isinstance(e.code, int) else 1
    except DomainBedError as e:  # a refusal: its one line would go to the console
        return e.exit_code
    except Exception:  # train.py has already written `failed` and the traceback to err.txt
        return 1


def _worker_main(conn, threads):
    """Receive (index, command) pairs until None; answer (index, exit code) for each."""
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(threads)
    prepare_process()   # the passive OpenMP wait, before torch starts
    import torch

    torch.set_num_threads(threads)
    from domainbed import training

    sys.stdout = sys.stderr = open(os.devnull, "w")
    while True:
        item = conn.recv()
        if item is None:
            return
        index, command = item
        conn.send((index, _run_one(command, training)))


# ---------------------------------------------------------------------------------------
# Launcher side

class _Worker:
    def __init__(self, context, threads):
        self.conn, child_conn = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child_conn, threads),
                                       daemon=True)
        self.process.start()
        child_conn.close()
        self.job = None  # (index, command) being run

    def give(self, job):
        self.job = job
        self.conn.send(job)

    def stop(self):
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()


@register_launcher("pool")
def pool_launcher(commands, workers=None):
    """Run the commands in `workers` warm processes (default DOMAINBED_POOL_WORKERS, else
    the CPU count); a failed job does not stop the others. Returns the number of failures."""
    commands = list(commands)
    if not commands:
        return 0
    chosen = workers or settings.pool_workers()
    n_workers = int(chosen if chosen is not None else (os.cpu_count() or 1))
    n_workers = max(1, min(n_workers, len(commands)))
    context = multiprocessing.get_context("spawn")
    threads = threads_per_worker(n_workers)
    queue = collections.deque(enumerate(commands))
    attempts = collections.Counter()
    pool = [_Worker(context, threads) for _ in range(n_workers)]
    progress = JobProgress(f"pool x{n_workers}", len(commands))
    try:
        for worker in pool:
            _hand_out(worker, queue, attempts)
        while any(worker.job is not None for worker in pool):
            busy = [w for w in pool if w.job is not None]
            ready = multiprocessing.connection.wait(
                [w.conn for w in busy] + [w.process.sentinel for w in busy])
            for worker in busy:
                if worker.conn not in ready and worker.process.sentinel not in ready:
                    continue
                code = _answer(worker)
                if code is not None:
                    worker.job = None
                    progress.finished(code != 0)
                    _hand_out(worker, queue, attempts)
                else:  # the worker died with its job
                    index, command = worker.job
                    if attempts[index] < MAX_ATTEMPTS:
                        queue.appendleft((index, command))  # train.py resumes it
                    else:
                        progress.finished(True, f"gave up after {MAX_ATTEMPTS} dead workers: "
                                                f"{command}")
                    pool[pool.index(worker)] = replacement = _Worker(context, threads)
                    _hand_out(replacement, queue, attempts)
    finally:
        for worker in pool:
            worker.stop()
    return progress.failures


def _answer(worker):
    """The exit code the worker sent for its job, or None when it died instead (a dead
    worker's pipe reads as end-of-file)."""
    try:
        if worker.conn.poll():
            return worker.conn.recv()[1]
    except (EOFError, OSError):
        pass
    return None


def _hand_out(worker, queue, attempts):
    if queue:
        job = queue.popleft()
        attempts[job[0]] += 1
        worker.give(job)
