"""Job states beyond upstream's three, read from the job-directory protocol files, and
`sweep status`: each job's state and progress, the counts, an ETA (torch-free)."""
import os
import time

from domainbed import datasets
from domainbed.launchers import command_launchers
from domainbed.lib import jobdir
from domainbed.sweeps.jobs import Job
from domainbed.sweeps.launch_records import launcher_is_alive, read_launch_record

RUNNING, FAILED, QUEUED, INTERRUPTED = "Running", "Failed", "Queued", "Interrupted"
NOT_STARTED = "Not started"   # launched by a launch that stopped before it ran the job



def detailed_state(job):
    """Upstream's state, refined for an Incomplete job:
    Running (lock held / fresh remote heartbeat), Failed (`failed` file), Queued (submitted
    to a queue, or waiting in a `sweep launch` that still runs, and not started since),
    Interrupted (stopped; `launch` resumes it), Not started (its launch stopped before
    running it: no heartbeat, no out.txt; `launch` starts it), or Incomplete (directory
    made by a launcher that runs nothing, or by an older sweep, or not a directory at all:
    delete_incomplete).
    """
    if job.state != Job.INCOMPLETE:
        return job.state
    if not os.path.isdir(job.output_dir):
        return Job.INCOMPLETE
    if jobdir.is_running(job.output_dir):
        return RUNNING
    if jobdir.is_failed(job.output_dir):
        return FAILED
    launch = read_launch_record(job.output_dir)
    if launch is None or not command_launchers.runs_jobs(launch["launcher"]):
        return Job.INCOMPLETE
    beat = jobdir.read_heartbeat(job.output_dir)
    if command_launchers.queues_jobs(launch["launcher"]) and beat is None:
        return QUEUED
    if launcher_is_alive(launch):
        launched_at = launch.get("time")
        launched_at = launched_at if isinstance(launched_at, (int, float)) else 0
        if beat is None or beat.get("started", 0) < launched_at:
            return QUEUED   # its launcher has not started it yet
    elif beat is None and not os.path.exists(os.path.join(job.output_dir, "out.txt")):
        return NOT_STARTED
    return INTERRUPTED



def cmd_status(args, jobs, now=None):
    """Per-job state and progress, then counts, total progress and an ETA."""
    now = time.time() if now is None else now
    states = [detailed_state(job) for job in jobs]
    done_steps = total_steps = 0
    steps_per_s = 0.0
    for job, state in zip(jobs, states):
        n_steps, step, rate = job_progress(job, state, now)
        total_steps += n_steps
        done_steps += step
        steps_per_s += rate
        print(status_line(job, state, step, n_steps))
    counts = ", ".join(f"{states.count(s)} {s.lower()}" for s in STATUS_ORDER)
    print(f"{len(jobs)} jobs: {counts}.")
    percent = 100.0 * done_steps / total_steps if total_steps else 100.0
    print(f"Progress: {done_steps} of {total_steps} steps ({percent:.1f}%).")
    print(eta_line(total_steps - done_steps, steps_per_s, states.count(RUNNING), states))
    if Job.NOT_LAUNCHED in states:
        note = other_jobs_note(jobs)
        if note:
            print(note)


def other_jobs_note(jobs):
    """A hint when the sweep directory holds job directories that are not these jobs (a
    launch with other arguments made them), or None."""
    listed = {os.path.abspath(job.output_dir) for job in jobs}
    others = done = 0
    for sweep_dir in sorted({os.path.dirname(os.path.abspath(job.output_dir)) for job in jobs}):
        try:
            names = os.listdir(sweep_dir)
        except OSError:
            continue
        for name in names:
            path = os.path.join(sweep_dir, name)
            if path in listed or not os.path.isdir(path) or not any(
                    os.path.exists(os.path.join(path, f)) for f in JOB_MARKERS):
                continue
            others += 1
            done += os.path.exists(os.path.join(path, "done"))
    if not others:
        return None
    return (f"Note: the sweep directory also holds {others} job directories ({done} done) that "
            f"are not among these {len(jobs)} jobs: a launch with other arguments made them "
            "(--steps, --n_hparams, --n_trials, --hparams, ...); give status that launch's "
            "arguments to see them.")


JOB_MARKERS = ("done", "launch.json", "results.jsonl", "job.json")



STATUS_ORDER = (Job.DONE, RUNNING, QUEUED, INTERRUPTED, NOT_STARTED, FAILED, Job.INCOMPLETE,
                Job.NOT_LAUNCHED)



def planned_steps(job):
    steps = job.train_args.get("steps")
    return steps or datasets.get_dataset_class(job.train_args["dataset"]).N_STEPS



def job_progress(job, state, now):
    """(n_steps, steps done, steps/s of a running job) from heartbeat.json."""
    beat = jobdir.read_heartbeat(job.output_dir) if state != Job.NOT_LAUNCHED else None
    n_steps = int(beat.get("n_steps", 0)) if beat else planned_steps(job)
    if state == Job.DONE:
        return n_steps, n_steps, 0.0
    if not beat:
        return n_steps, 0, 0.0
    step = int(beat.get("step", 0))
    rate = 0.0
    if state == RUNNING:
        elapsed = float(beat.get("updated", now)) - float(beat.get("started", now))
        steps_since = step - int(beat.get("start_step", 0))
        if elapsed > 0 and steps_since > 0:
            rate = steps_since / elapsed
    return n_steps, step, rate



def status_line(job, state, step, n_steps):
    info = (job.train_args["dataset"], job.train_args["algorithm"],
            job.train_args["test_envs"], job.train_args["hparams_seed"])
    line = f"{state}: {job.output_dir} {info}"
    if state in (RUNNING, INTERRUPTED, FAILED) and n_steps:
        line += f" step {step}/{n_steps} ({100.0 * step / n_steps:.0f}%)"
    if state == FAILED:
        failed = jobdir.read_failed(job.output_dir) or {}
        line += f" reason: {failed.get('reason')}"
    return line



def eta_line(remaining_steps, steps_per_s, n_running, states):
    if remaining_steps <= 0:
        return "ETA: nothing left to run."
    if steps_per_s <= 0:
        return "ETA: unknown (no running job has reported progress yet)."
    seconds = remaining_steps / steps_per_s
    note = ""
    if states.count(FAILED):
        note = f"; {states.count(FAILED)} failed jobs counted as still to run"
    return (f"ETA: {format_duration(seconds)} at the current rate ({n_running} running jobs, "
            f"{steps_per_s:.2f} steps/s in total{note}).")



def format_duration(seconds):
    minutes = int(round(seconds / 60.0))
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h {minutes}m"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m" if minutes else f"{int(seconds)}s"

