"""One training job from its arguments to its exit code, a straight line: validation
(nothing read from or written to the output directory) -> the job's lock (which also
checks the directory's identity) -> build (dataset, splits, loaders, algorithm) -> the
training loop -> the finish. A refusal anywhere before the loop leaves the file system as
it was (what the lock made is removed again) and is raised as a DomainBedError; a failure in
the loop goes through `record_failure`, the one failure path."""
import sys

from domainbed.lib import jobdir, threads
from domainbed.training import tensorboard_logs
from domainbed.training.build import build, describe_pipeline
from domainbed.training.errors import BadInput
from domainbed.training.failures import record_failure
from domainbed.training.lock import JobDirectoryLock, already_done_message
from domainbed.training.logs import (Logs, print_environment, print_precision,
                                     print_sorted_block)
from domainbed.training.loop import StopRequest, TrainingLoop
from domainbed.training.plan import setting_up, validate
from domainbed.training.timing import job_start_time


def run_job(config):
    """Run the job of `config` (a domainbed.config.RunConfig). Returns the exit code: 0 (done, or
    already done), 3 (a non-finite loss), 128 + N (stopped by signal N, resumable); raises
    a DomainBedError for a refusal or a failed write, and an unforeseen error as it is (after
    `failed` and the traceback are written)."""
    started = job_start_time()
    threads_line = apply_thread_policy()                 # ours: out.txt's `Threads:` line
    # ours, not one of the job's args: a BadInput when asked for and it cannot be written
    tensorboard = tensorboard_logs.requested(config.tensorboard)
    with setting_up():
        plan = validate(config)
    with JobDirectoryLock(config) as lock:
        with setting_up():
            if lock.is_done():
                print(already_done_message(config.output_dir), file=sys.stderr)
                return 0
            job = build(plan)
            job.tensorboard = tensorboard
            job.started = started
            job.threads_line = threads_line
        lock.keep()
        return run(job)


def apply_thread_policy():
    """torch's threads by lib/threads.py's policy; a bad DOMAINBED_THREADS or
    OMP_NUM_THREADS is a BadInput before anything is written."""
    try:
        return threads.apply_to_torch()
    except threads.ThreadSettingError as error:
        raise BadInput(str(error)) from None


def run(job):
    """The loop and the finish in the job's logs, after the header blocks and job.json.
    Returns the exit code; every failure goes through `record_failure`."""
    out = job.config.output_dir
    loop = TrainingLoop(job)
    with Logs(out) as logs, StopRequest() as stop:
        try:
            print_environment()
            print_precision(job.config)
            print_sorted_block("Args", job.config.record_args())
            print_sorted_block("HParams", job.hparams)
            print(describe_pipeline(job.dataset, job.config))   # ours: which input pipeline
            print(job.threads_line)   # ours: threads and OpenMP wait (lib/threads.py)
            jobdir.write_job_identity(out, job.config.identity())
            jobdir.clear_failed(out)
            return loop.run(stop)
        except BadInput:
            raise
        except Exception as error:
            return record_failure(job, error, loop.step, stop, logs)
        finally:
            job.close()
