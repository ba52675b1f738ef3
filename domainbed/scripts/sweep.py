"""Run a hyperparameter sweep: launch, delete_incomplete and status (torch-free).

    python -m domainbed.scripts.sweep launch --data_dir D --output_dir O --command_launcher local

The job list, the job directories (md5 of the train args), the command strings, the states
and the printed lines are upstream DomainBed's. What this version adds:

* Liveness. A job whose `.lock` is held by a train.py (or whose heartbeat.json, from another
  host, is fresh) is running: `delete_incomplete` never deletes it, and says so.
* Relaunch after an interruption. `launch` writes `launch.json` ({"launcher", "time", "pid",
  "host", "pid_start"}: which launcher, and which `sweep launch` process) into every job
  directory it launches. A job that a still-running `sweep launch` has not started yet is
  Queued, not Interrupted. A later `launch` with the same arguments launches the
  Not-launched jobs, as upstream, and also every Incomplete job that is not running, has no
  `failed` file, and was launched by a launcher that really runs jobs (not `dummy`; for a
  queueing launcher such as `slurm`, only once the job has started at least once).
  train.py resumes such a job from its checkpoint, and refuses to run twice at the same time,
  so killing `sweep launch` and running it again finishes the sweep with nothing lost, nothing
  run twice and no duplicate records. Failed jobs are left alone: inspect them, then
  `delete_incomplete` and `launch` (upstream's recovery) to start them over.
* `status`: each job's state (Done, Running, Failed, Queued, Interrupted, Incomplete, Not
  launched) with its progress from heartbeat.json, then a summary with an ETA. Garbage in a
  job directory (heartbeat, launch.json, `.lock` as a directory, a file where a job
  directory should be) reads as "nothing there", never as a crash.
* Validation. `launch` checks every job's train arguments and the --hparams overrides
  (names, types, ranges; lib/validation.py and hparams_registry.apply_overrides, the same
  checks as train.py), and each dataset's own checks of its arguments and data (for
  `Folder`, the tree or manifest under --data_dir), before it makes a single job directory.
* `--selection_method M [M ...]`: only the jobs these model-selection methods read (every
  single test env for training-domain validation and the oracle; the pairs too for
  leave-one-domain-out). The kept jobs are the full sweep's, with the same directories, so
  a later sweep without the flag launches only the rest. Every command takes the flag, and
  sees the same jobs with it.
* `--best_hparams_from DIR`: for every selection method (default: collect_results' three),
  dataset, algorithm and test env of the finished sweep DIR, the hparams the method selected
  there, run for --n_trials trials as the jobs a hand-written sweep with `--n_hparams_from S
  --n_hparams S+1 --hparams '<those hparams>'` lists, in OUTPUT_DIR/<method> (one sweep
  directory per method, so that collect_results reports each method's own choice).
"""
import argparse
import copy
import hashlib
import json
import os
import shlex
import shutil
import socket
import sys
import time

import numpy as np

from domainbed import algorithms, command_launchers, datasets, model_selection
from domainbed.algorithms.registry import check_algorithm_name
from domainbed.lib import jobdir, reporting, validation
from domainbed.lib.cli import OneLineErrorParser
from domainbed.lib.misc import seed_hash
from domainbed.lib.progress import progress
from domainbed.lib.query import Q
from domainbed.lib.registry import PluginError, UnknownNameError

LAUNCH_FILE = "launch.json"


class Job:
    NOT_LAUNCHED = "Not launched"
    INCOMPLETE = "Incomplete"
    DONE = "Done"

    def __init__(self, train_args, sweep_output_dir):
        args_str = json.dumps(train_args, sort_keys=True)
        args_hash = hashlib.md5(args_str.encode("utf-8")).hexdigest()
        self.output_dir = os.path.join(sweep_output_dir, args_hash)
        self.train_args = copy.deepcopy(train_args)
        self.train_args["output_dir"] = self.output_dir
        self.command_str = command_string(self.train_args)
        if os.path.exists(os.path.join(self.output_dir, "done")):
            self.state = Job.DONE
        elif os.path.exists(self.output_dir):
            self.state = Job.INCOMPLETE
        else:
            self.state = Job.NOT_LAUNCHED

    def __str__(self):
        info = (self.train_args["dataset"], self.train_args["algorithm"],
                self.train_args["test_envs"], self.train_args["hparams_seed"])
        return f"{self.state}: {self.output_dir} {info}"

    @staticmethod
    def launch(jobs, launcher_fn, launcher_name=None, launcher_args=None):
        """Make the job directories (recording the launcher), then hand the commands over."""
        print("Launching...")
        jobs = jobs.copy()
        np.random.shuffle(jobs)
        print("Making job directories:")
        for job in progress(jobs):
            try:
                os.makedirs(job.output_dir, exist_ok=True)
                if launcher_name is not None:
                    write_launch_record(job.output_dir, launcher_name)
            except OSError as e:
                raise SweepError(f"cannot make job directory {job.output_dir} "
                                 f"({e.strerror or e}); nothing was launched. Make the "
                                 "--output_dir writable (and free some space) and rerun") from None
        commands = [job.command_str for job in jobs]
        if launcher_args:
            launcher_fn(commands, **launcher_args)
        else:
            launcher_fn(commands)
        print(f"Launched {len(jobs)} jobs!")

    @staticmethod
    def delete(jobs):
        """Delete the jobs' directories, except those that started running meanwhile, and
        paths that are not job directories (a file, a symbolic link: left alone)."""
        print("Deleting...")
        deleted = 0
        for job in jobs:
            path = job.output_dir
            if os.path.islink(path) or not os.path.isdir(path):
                kind = "a symbolic link" if os.path.islink(path) else "not a directory"
                print(f"Not deleted ({kind}; remove it by hand if it is not needed): {path}")
                continue
            try:
                try:
                    with jobdir.JobLock(path):
                        shutil.rmtree(path)
                except jobdir.JobLockError:
                    if jobdir.is_running(path):   # (a live job on another host)
                        raise jobdir.JobRunningError(path) from None
                    shutil.rmtree(path)           # e.g. `.lock` is a directory: nobody holds it
                deleted += 1
            except jobdir.JobRunningError:
                print(f"Not deleted (started running meanwhile): {path}")
            except OSError as e:
                print(f"Not deleted ({e.strerror or e}): {path}")
        print(f"Deleted {deleted} jobs!")


def command_string(train_args):
    """`python -m domainbed.scripts.train --key value ...` in sorted key order."""
    command = ["python", "-m", "domainbed.scripts.train"]
    for key, value in sorted(train_args.items()):
        if isinstance(value, list):
            value = " ".join(str(v) for v in value)
        elif isinstance(value, str):
            value = shlex.quote(value)
        command.append(f"--{key} {value}")
    return " ".join(command)


class SweepError(Exception):
    """A one-line reason to stop (exit 2); the message says what to do."""


def _process_start_ticks(pid):
    """When process `pid` started (clock ticks since boot, Linux), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def write_launch_record(output_dir, launcher_name):
    record = {"launcher": launcher_name, "time": time.time(), "pid": os.getpid(),
              "host": socket.gethostname(), "pid_start": _process_start_ticks(os.getpid())}
    jobdir.atomic_write_bytes(os.path.join(output_dir, LAUNCH_FILE),
                              (json.dumps(record) + "\n").encode())


def read_launch_record(output_dir):
    """launch.json as a dict whose "launcher" is a name, or None (missing, garbage)."""
    record = jobdir.read_small_json(os.path.join(output_dir, LAUNCH_FILE))
    if not isinstance(record, dict) or not isinstance(record.get("launcher"), str):
        return None
    return record


def launcher_is_alive(record):
    """Whether the `sweep launch` process that wrote this launch.json still runs (on this
    host; one on another host cannot be seen, and counts as gone)."""
    pid, host = record.get("pid"), record.get("host")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or host != socket.gethostname():
        return False
    ticks = _process_start_ticks(pid)
    if ticks is not None or os.path.isdir("/proc"):
        return ticks is not None and ticks == record.get("pid_start")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


# ---------------------------------------------------------------------------------------
# Job enumeration

def all_test_env_combinations(n):
    """[i] then [i, j] for every j > i, for each i: every 1- and 2-test-env combination."""
    assert n >= 3
    for i in range(n):
        yield [i]
        for j in range(i + 1, n):
            yield [i, j]


def make_args_list(n_trials, dataset_names, algorithms, n_hparams_from, n_hparams, steps,
                   data_dir, task, holdout_fraction, single_test_envs, hparams,
                   test_env_counts=None):
    """Upstream's job list. Ours: the number of environments may depend on the sweep's
    --hparams (JSON string or None) and, for datasets such as `Folder`, on --data_dir; each
    dataset says which test envs a sweep runs (`sweep_test_envs`; upstream's enumeration
    unless the dataset overrides it). `test_env_counts` (from --selection_method): keep only
    the jobs with that many test envs, the ones those selection methods read (None: all).
    Hparams or data a dataset refuses are a one-line error (exit 2), before any job is
    listed."""
    overrides = json.loads(hparams) if hparams is not None else None
    pairs_needed = test_env_counts is None or 2 in test_env_counts
    test_env_lists = {}
    for dataset in dataset_names:
        try:
            n_envs = datasets.num_environments(dataset, overrides, data_dir)
        except (datasets.DatasetArgumentError, datasets.DatasetNotFoundError) as error:
            from_data = datasets.get_dataset_class(dataset).ENVIRONMENTS_FROM_DATA
            flag = "" if from_data else "--hparams: "
            print(f"sweep.py: error: {flag}{' '.join(str(error).split())}", file=sys.stderr)
            raise SystemExit(2) from None
        test_env_lists[dataset] = [
            test_envs for test_envs in datasets.get_dataset_class(dataset).sweep_test_envs(
                n_envs, single_test_envs or not pairs_needed)
            if test_env_counts is None or len(test_envs) in test_env_counts]
    args_list = []
    for trial_seed in range(n_trials):
        for dataset in dataset_names:
            for algorithm in algorithms:
                for test_envs in copy.deepcopy(test_env_lists[dataset]):
                    for hparams_seed in range(n_hparams_from, n_hparams):
                        train_args = {
                            "dataset": dataset, "algorithm": algorithm,
                            "test_envs": test_envs, "holdout_fraction": holdout_fraction,
                            "hparams_seed": hparams_seed, "data_dir": data_dir, "task": task,
                            "trial_seed": trial_seed,
                            "seed": seed_hash(dataset, algorithm, test_envs, hparams_seed,
                                              trial_seed),
                        }
                        if steps is not None:
                            train_args["steps"] = steps
                        if hparams is not None:
                            train_args["hparams"] = hparams
                        args_list.append(train_args)
    return args_list


def default_datasets():
    """Upstream's default: every dataset without 'Debug' in its name. Ours: not those that
    read their environments from --data_dir (`Folder`): name them with --datasets."""
    return [d for d in datasets.DATASETS if "Debug" not in d
            and not datasets.get_dataset_class(d).ENVIRONMENTS_FROM_DATA]


def ask_for_confirmation():
    try:
        response = input("Are you sure? (y/n) ")
    except EOFError:
        print()
        raise SweepError("no answer (standard input is closed); pass --skip_confirmation") from None
    if not response.lower().strip()[:1] == "y":
        print("Nevermind!")
        exit(0)


# ---------------------------------------------------------------------------------------
# Job states beyond upstream's three (from the job-directory protocol files)

RUNNING, FAILED, QUEUED, INTERRUPTED = "Running", "Failed", "Queued", "Interrupted"


def detailed_state(job):
    """Upstream's state, refined for an Incomplete job:
    Running (lock held / fresh remote heartbeat), Failed (`failed` file), Queued (submitted
    to a queue, or waiting in a `sweep launch` that still runs, and not started since),
    Interrupted (stopped; `launch` resumes it), or Incomplete (directory made by a launcher
    that runs nothing, or by an older sweep, or not a directory at all: delete_incomplete).
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
    return INTERRUPTED


# ---------------------------------------------------------------------------------------
# Commands

def cmd_launch(args, jobs, launcher_fn):
    resumed = [job for job in jobs if job.state == Job.INCOMPLETE
               and detailed_state(job) == INTERRUPTED]
    to_launch = [job for job in jobs if job.state == Job.NOT_LAUNCHED] + resumed
    if resumed:
        print(f"Relaunching {len(resumed)} interrupted jobs (incomplete, not running, not "
              "failed; train.py resumes them from their checkpoints).")
    print(f"About to launch {len(to_launch)} jobs.")
    if not args.skip_confirmation:
        ask_for_confirmation()
    Job.launch(to_launch, launcher_fn, args.command_launcher, args.launcher_args)


def cmd_delete_incomplete(args, jobs):
    incomplete = [job for job in jobs if job.state == Job.INCOMPLETE]
    running = [job for job in incomplete if jobdir.is_running(job.output_dir)]
    if running:
        print(f"Not deleting {len(running)} running jobs (a train.py holds their .lock, or "
              "their heartbeat from another host is fresh):")
        for job in running:
            print(f"  {RUNNING}: {job.output_dir}")
    to_delete = [job for job in incomplete if job not in running]
    print(f"About to delete {len(to_delete)} jobs.")
    if not args.skip_confirmation:
        ask_for_confirmation()
    Job.delete(to_delete)


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


STATUS_ORDER = (Job.DONE, RUNNING, QUEUED, INTERRUPTED, FAILED, Job.INCOMPLETE, Job.NOT_LAUNCHED)


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


# ---------------------------------------------------------------------------------------
# Command line

EPILOG = """\
Relaunching: run `launch` again with the same arguments after `sweep launch` was killed or
jobs were interrupted (preemption, reboot): it launches the Not-launched jobs and resumes the
Interrupted ones (Incomplete, not running, no `failed` file, launched by a launcher that runs
jobs; for slurm, only jobs that started once). Nothing runs twice (train.py holds a lock on
its directory) and records are not duplicated (train.py resumes from its checkpoint).
Jobs made by `--command_launcher dummy` are never relaunched: `delete_incomplete` first.
`delete_incomplete` deletes Incomplete, Interrupted, Queued and Failed jobs, never Running ones.
Your own launchers: see domainbed/command_launchers.py (DOMAINBED_PLUGINS).
"""


def build_parser():
    parser = OneLineErrorParser(
        description="Run a sweep", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["launch", "delete_incomplete", "status"])
    parser.add_argument("--datasets", nargs="+", type=str, default=None,
                        help="default: every registered dataset without 'Debug' in its name")
    parser.add_argument("--algorithms", nargs="+", type=str, default=None,
                        help="default: every registered algorithm")
    parser.add_argument("--task", type=str, default="domain_generalization")
    parser.add_argument("--n_hparams_from", type=int, default=None, help="default: 0")
    parser.add_argument("--n_hparams", type=int, default=None, help="default: 20")
    parser.add_argument("--output_dir", type=str, required=True)
    parser.add_argument("--data_dir", type=str, required=True)
    parser.add_argument("--seed", type=int, default=0, help="unused (as upstream)")
    parser.add_argument("--n_trials", type=int, default=3)
    parser.add_argument("--command_launcher", type=str, default=None,
                        help="required for launch and delete_incomplete: "
                             + ", ".join(command_launchers.REGISTRY.names(plugins=False))
                             + " or a plug-in's")
    parser.add_argument("--launcher_args", type=str, default=None,
                        help="JSON options for the launcher, e.g. '{\"jobs_per_gpu\": 2}'")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--hparams", type=str, default=None)
    parser.add_argument("--holdout_fraction", type=float, default=0.2)
    parser.add_argument("--single_test_envs", action="store_true")
    parser.add_argument("--skip_confirmation", action="store_true")
    parser.add_argument(
        "--selection_method", nargs="+", default=None, metavar="METHOD",
        help="only the jobs these model-selection methods read (for every command, so that "
             "launch, delete_incomplete and status see the same jobs): "
             "IIDAccuracySelectionMethod and OracleSelectionMethod read the runs with one "
             "test env, LeaveOneOutSelectionMethod the two-test-env runs too. Default: every "
             "job (upstream's sweep)")
    parser.add_argument(
        "--best_hparams_from", metavar="DIR", default=None,
        help="re-run the hparams that each --selection_method (default: the three of "
             "collect_results) selected in the finished sweep DIR, for every dataset, "
             "algorithm and test env there, with --n_trials trials; the jobs of method M go "
             "into OUTPUT_DIR/M, a sweep directory of its own for collect_results")
    return parser


def check_names(parser, args, methods=None):
    """Validate every name before any job is listed; a "did you mean" error otherwise."""
    known_algorithms = algorithms.ALGORITHMS
    for algorithm in args.algorithms:
        if algorithm not in known_algorithms:
            try:   # X+SWAD, X+MA: a registered algorithm with a weight-averaging wrapper
                check_algorithm_name(algorithm)
            except UnknownNameError as error:
                parser.error(str(error))
    pairs = (not args.single_test_envs and args.best_hparams_from is None
             and (methods is None or 2 in model_selection.test_env_counts(methods)))
    for dataset in args.datasets:
        try:
            n_envs = datasets.num_environments(dataset, data_dir=args.data_dir)
        except UnknownNameError as error:
            parser.error(str(error))
        except (datasets.DatasetArgumentError, datasets.DatasetNotFoundError) as error:
            parser.error(" ".join(str(error).split()))
        if n_envs < 3 and pairs:
            parser.error(f"dataset {dataset} has {n_envs} environments; pairs of test envs need "
                         "3 or more: add --single_test_envs")
    if args.command_launcher is None and args.command != "status":
        parser.error("the following arguments are required: --command_launcher")
    if args.hparams is not None:
        try:
            validation.parse_hparams(args.hparams)
        except validation.ValidationError as error:
            parser.error(str(error))
    if os.path.exists(args.output_dir) and not os.path.isdir(args.output_dir):
        parser.error(f"--output_dir {args.output_dir} is a file; give the sweep's directory")


def resolve_selection_methods(parser, args):
    """--selection_method as classes (None: not given), each once, in the order given."""
    if args.selection_method is None:
        return None
    methods = []
    for name in args.selection_method:
        try:
            method = model_selection.get_selection_method(name)
        except UnknownNameError as error:
            parser.error(f"--selection_method: {error}")
        if method not in methods:
            methods.append(method)
    needs_pairs = [m.__name__ for m in methods if 2 in m.TEST_ENV_COUNTS]
    if args.single_test_envs and needs_pairs:
        parser.error(f"--selection_method {needs_pairs[0]} reads the runs with 2 test envs, "
                     "which --single_test_envs leaves out: drop one of the two")
    return methods


def check_jobs(parser, args, args_list):
    """Before `launch` makes any directory: every job's train arguments, the dataset's own
    checks of its test envs, hparams and data (`check_arguments`; for `Folder`, the tree or
    manifest under --data_dir, every image opened once), and the --hparams overrides of
    each (algorithm, dataset), with train.py's own checks."""
    if args.task == "domain_adaptation":
        parser.error("--task domain_adaptation: train.py then needs --uda_holdout_fraction "
                     "above 0, which a sweep does not pass (as upstream); run those jobs with "
                     "train.py")
    for train_args in args_list:
        try:
            validation.check_train_args(train_args)
        except validation.ValidationError as error:
            parser.error(f"{error} (in job {train_args['dataset']} / {train_args['algorithm']}"
                         f", from --n_hparams_from / --n_trials / --steps / "
                         f"--holdout_fraction)")
    checked = set()
    for train_args in args_list:
        dataset, test_envs = train_args["dataset"], train_args["test_envs"]
        key = (dataset, tuple(test_envs), train_args.get("hparams"))
        if key in checked:
            continue
        checked.add(key)
        dataset_class = datasets.get_dataset_class(dataset)
        overrides = json.loads(train_args["hparams"]) if train_args.get("hparams") else {}
        try:
            if dataset_class.ENVIRONMENTS_FROM_DATA:
                dataset_class.check_arguments(test_envs, overrides, data_dir=args.data_dir)
            else:
                dataset_class.check_arguments(test_envs, overrides)
        except (datasets.DatasetArgumentError, datasets.DatasetNotFoundError) as error:
            parser.error(f"{' '.join(str(error).split())} (nothing launched)")
    with_hparams = sorted({(a["algorithm"], a["dataset"], a["hparams"]) for a in args_list
                           if a.get("hparams") is not None})
    if not with_hparams:
        return
    from domainbed import hparams_registry

    for algorithm, dataset, text in with_hparams:
        try:
            hparams_registry.apply_overrides(
                hparams_registry.default_hparams(algorithm, dataset),
                validation.parse_hparams(text))
        except hparams_registry.HparamError as error:
            parser.error(f"--hparams: {error} ({algorithm} on {dataset}; nothing launched)")


# ---------------------------------------------------------------------------------------
# --best_hparams_from: the selected hparams of a finished sweep, re-run with more trials

def note(message):
    print(f"sweep: note: {message}", file=sys.stderr)


def check_best_hparams_flags(parser, args):
    if args.hparams is not None:
        parser.error("--hparams and --best_hparams_from contradict each other (the hparams "
                     "come from the runs in DIR): drop --hparams")
    if args.n_hparams is not None or args.n_hparams_from is not None:
        parser.error("--n_hparams and --n_hparams_from do not apply with --best_hparams_from "
                     "(each job re-runs the hparams_seed a method selected): drop them")
    if not os.path.isdir(args.best_hparams_from):
        parser.error(f"--best_hparams_from {args.best_hparams_from!r} is not a directory: give "
                     "a finished sweep's --output_dir")


def load_finished_sweep(parser, args):
    """The records of --best_hparams_from DIR, read as collect_results reads them."""
    try:
        report = reporting.load_sweep(args.best_hparams_from)
    except OSError as error:
        parser.error(f"cannot read --best_hparams_from {args.best_hparams_from} "
                     f"({error.strerror or error}); give a readable sweep directory")
    if not len(report.records):
        parser.error(f"--best_hparams_from {args.best_hparams_from} holds no records "
                     "(results.jsonl in its job directories): give a finished sweep's "
                     "--output_dir")
    unfinished = sum(not job.done for job in report.jobs)
    if unfinished:
        note(f"{unfinished} of the {len(report.jobs)} jobs in {args.best_hparams_from} are "
             "not done; selecting among the records there are (as collect_results does)")
    return report.records


def best_hparams_plan(args, methods, records):
    """[(method, train_args)]: for each method, dataset and algorithm, the run the method
    selects for every test env in the first trial of DIR (its lowest trial_seed, so that
    one hparams_seed means one set of hparams), as a hand-written sweep
    `--n_hparams_from S --n_hparams S+1 --hparams '<those hparams>'` would list its jobs:
    the test env alone, and for leave-one-domain-out its pairs too, for --n_trials trials."""
    plan, differs = [], {}
    for method in methods:
        pairs = 2 in method.TEST_ENV_COUNTS
        selected = model_selection.selected_runs(records, method)
        for dataset in args.datasets:
            for algorithm in args.algorithms:
                cell = [c for c in selected
                        if (c["dataset"], c["algorithm"]) == (dataset, algorithm)]
                ran = [r for r in records if (r["args"]["dataset"], r["args"]["algorithm"])
                       == (dataset, algorithm)]
                if not ran:
                    continue
                trial = min(r["args"]["trial_seed"] for r in ran)
                chosen = {c["test_env"]: c for c in cell if c["trial_seed"] == trial}
                test_envs = sorted({e for r in ran if r["args"]["trial_seed"] == trial
                                    for e in r["args"]["test_envs"]})
                for test_env in test_envs:
                    if test_env not in chosen:
                        reason = reporting.missing_cell_reasons(records, method.name, dataset,
                                                                algorithm)
                        note(f"{method.__name__} selects no run for {dataset} / {algorithm} / "
                             f"test env {test_env} in trial {trial} ({reason}); nothing to "
                             "re-run for it")
                        continue
                    plan += _rerun_args(args, method, chosen[test_env], pairs)
                    for flag in ("steps", "holdout_fraction"):
                        value = chosen[test_env]["records"][0]["args"].get(flag)
                        if value != getattr(args, flag):
                            differs.setdefault(flag, set()).add(value)
    for flag, values in differs.items():
        ours = getattr(args, flag)
        note(f"runs selected in {args.best_hparams_from} ran --{flag} "
             f"{' / '.join(sorted(map(str, values)))}; these re-runs use "
             + (f"--{flag} {ours}" if ours is not None else "the dataset's default"))
    unique, seen = [], set()
    for method, train_args in plan:
        key = (method.__name__, json.dumps(train_args, sort_keys=True))
        if key not in seen:
            seen.add(key)
            unique.append((method, train_args))
    return unique


def _rerun_args(args, method, choice, pairs):
    run = choice["records"][0]
    hparams_seed, test_env = run["args"]["hparams_seed"], choice["test_env"]
    args_list = make_args_list(
        n_trials=args.n_trials, dataset_names=[choice["dataset"]],
        algorithms=[choice["algorithm"]], n_hparams_from=hparams_seed,
        n_hparams=hparams_seed + 1, steps=args.steps, data_dir=args.data_dir, task=args.task,
        holdout_fraction=args.holdout_fraction, single_test_envs=not pairs,
        hparams=json.dumps(run["hparams"], sort_keys=True))
    def needed(test_envs):   # the test env alone; for leave-one-out, its pairs too
        return test_envs == [test_env] or (pairs and len(test_envs) == 2 and test_env in test_envs)

    return [(method, a) for a in args_list if needed(a["test_envs"])]


def names_in_records(records, field, known):
    """The `args.<field>` values of the records: known names in their order, then others."""
    present = Q(records).select(f"args.{field}").unique()
    return [name for name in known if name in present] + [
        name for name in present if name not in known]


def check_launcher_args(parser, launcher_fn, launcher_args):
    """--launcher_args that the launcher does not take: refused before anything is made."""
    import inspect

    try:
        inspect.signature(launcher_fn).bind([], **launcher_args)
    except TypeError as error:
        parser.error(f"--launcher_args: {error}; see the launcher's options in "
                     "domainbed/command_launchers.py")
    except ValueError:  # no signature (a builtin): let the launcher decide
        pass
    check = getattr(launcher_fn, "check_options", None)
    if check is not None:
        try:
            check(launcher_args)
        except command_launchers.LauncherError as error:
            parser.error(f"--launcher_args: {error}")


def resolve_launcher(parser, args):
    if args.command_launcher is None:
        return None
    try:
        return command_launchers.get_launcher(args.command_launcher)
    except UnknownNameError as error:
        parser.error(str(error))


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        command_launchers.load_plugins()  # plug-in launchers tell how their jobs behave
    except PluginError as error:
        parser.error(str(error))
    methods = resolve_selection_methods(parser, args)
    records = None
    if args.best_hparams_from is not None:
        check_best_hparams_flags(parser, args)
        methods = methods or [m for m in model_selection.SELECTION_METHODS   # all that fit
                              if not (args.single_test_envs and 2 in m.TEST_ENV_COUNTS)]
        records = load_finished_sweep(parser, args)
        args.datasets = args.datasets or names_in_records(records, "dataset", datasets.DATASETS)
        args.algorithms = args.algorithms or names_in_records(records, "algorithm",
                                                              algorithms.ALGORITHMS)
    else:
        args.n_hparams_from = 0 if args.n_hparams_from is None else args.n_hparams_from
        args.n_hparams = 20 if args.n_hparams is None else args.n_hparams
        args.datasets = args.datasets or default_datasets()
        args.algorithms = args.algorithms or algorithms.ALGORITHMS
    check_names(parser, args, methods)
    launcher_fn = resolve_launcher(parser, args)
    try:
        args.launcher_args = command_launchers.parse_launcher_args(args.launcher_args)
    except command_launchers.LauncherError as error:
        parser.error(str(error))

    if records is not None:
        plan = best_hparams_plan(args, methods, records)
        if not plan:
            parser.error(f"nothing to re-run: no --selection_method selects a run in "
                         f"{args.best_hparams_from} (see the notes above)")
        args_list = [train_args for _, train_args in plan]
        sweep_dirs = [os.path.join(args.output_dir, method.__name__) for method, _ in plan]
    else:
        args_list = make_args_list(
            n_trials=args.n_trials, dataset_names=args.datasets, algorithms=args.algorithms,
            n_hparams_from=args.n_hparams_from, n_hparams=args.n_hparams, steps=args.steps,
            data_dir=args.data_dir, task=args.task, holdout_fraction=args.holdout_fraction,
            single_test_envs=args.single_test_envs, hparams=args.hparams,
            test_env_counts=model_selection.test_env_counts(methods) if methods else None)
        sweep_dirs = [args.output_dir] * len(args_list)
    if args.command == "launch":
        check_jobs(parser, args, args_list)
        check_launcher_args(parser, launcher_fn, args.launcher_args)
    jobs = [Job(train_args, sweep_dir) for train_args, sweep_dir in zip(args_list, sweep_dirs)]

    if args.command == "status":
        cmd_status(args, jobs)
        return
    for job in jobs:
        print(job)
    print("{} jobs: {} done, {} incomplete, {} not launched.".format(
        len(jobs),
        len([j for j in jobs if j.state == Job.DONE]),
        len([j for j in jobs if j.state == Job.INCOMPLETE]),
        len([j for j in jobs if j.state == Job.NOT_LAUNCHED])))
    try:
        if args.command == "launch":
            cmd_launch(args, jobs, launcher_fn)
        elif args.command == "delete_incomplete":
            cmd_delete_incomplete(args, jobs)
    except SweepError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    if records is not None and args.command == "launch":
        for sweep_dir in dict.fromkeys(sweep_dirs):
            print(f"Collect them with: python -m domainbed.scripts.collect_results "
                  f"--input_dir {shlex.quote(sweep_dir)}")


def cli(argv=None):
    """main() with no traceback: an unexpected error is one line, exit code 1."""
    from domainbed.lib.cli import one_line_errors

    return one_line_errors(main, argv, "sweep",
                           "interrupted; run the same command again to continue")


if __name__ == "__main__":
    sys.exit(cli())
