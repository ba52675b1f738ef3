"""The sweep commands, from parsed arguments to their printed lines: `run_sweep(args)`
checks the arguments, lists the jobs (upstream's, those of --selection_method, or those of
--best_hparams_from) and runs `launch`, `delete_incomplete` or `status` (torch-free).
Every refusal is a SweepError, or the BadInput a check raised (an unknown name, a bad
number: `scripts/sweep.py` prints both alike), raised before anything is made."""
import os
import shlex

from domainbed import algorithms, datasets, model_selection
from domainbed.config import SPEED_OPTIONS
from domainbed.launchers import command_launchers
from domainbed.lib import jobdir, validation
from domainbed.lib.registry import PluginError
from domainbed.sweeps.best_hparams import (best_hparams_plan, check_best_hparams_flags,
                                           load_finished_sweep, names_in_records)
from domainbed.sweeps import config_file
from domainbed.sweeps.checks import (check_jobs, check_launcher_args, check_names,
                                     resolve_launcher, resolve_selection_methods)
from domainbed.sweeps.errors import SweepError
from domainbed.sweeps.job_list import default_datasets, make_args_list
from domainbed.sweeps.jobs import Job, check_not_foreign
from domainbed.sweeps.status import (INTERRUPTED, NOT_STARTED, RUNNING, cmd_status,
                                     detailed_state)


def ask_for_confirmation():
    """True when the answer is yes; "Nevermind!" and False otherwise."""
    try:
        response = input("Are you sure? (y/n) ")
    except EOFError:
        print()
        raise SweepError("no answer (standard input is closed); pass --skip_confirmation") from None
    if not response.lower().strip()[:1] == "y":
        print("Nevermind!")
        return False
    return True


def cmd_launch(args, jobs, launcher_fn):
    """Launch the Not-launched and the Interrupted jobs; False when the user said no."""
    resumed = [job for job in jobs if job.state == Job.INCOMPLETE
               and detailed_state(job) in (INTERRUPTED, NOT_STARTED)]
    to_launch = [job for job in jobs if job.state == Job.NOT_LAUNCHED] + resumed
    if resumed:
        print(f"Relaunching {len(resumed)} interrupted jobs (incomplete, not running, not "
              "failed; train.py resumes them from their checkpoints).")
    print(f"About to launch {len(to_launch)} jobs.")
    if not args.skip_confirmation and not ask_for_confirmation():
        return False
    Job.launch(to_launch, launcher_fn, args.command_launcher, args.launcher_args)
    return True


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
    if not args.skip_confirmation and not ask_for_confirmation():
        return
    Job.delete(to_delete)


def speed_options(args):
    """The sweep's speed flags that are not train.py's defaults (added to every job's args;
    absent from a namespace built without them)."""
    return {name: getattr(args, name) for name, default in SPEED_OPTIONS.items()
            if getattr(args, name, default) != default}


def flags_args_list(args, methods):
    """Every job's train args: upstream's list from the flags, or the concatenated lists of
    a --config file's launch units (each the list of its equivalent flags)."""
    def job_list(dataset_names, algorithm_names, n_hparams_from, n_hparams, hparams):
        return make_args_list(
            n_trials=args.n_trials, dataset_names=dataset_names, algorithms=algorithm_names,
            n_hparams_from=n_hparams_from, n_hparams=n_hparams, steps=args.steps,
            data_dir=args.data_dir, task=args.task, holdout_fraction=args.holdout_fraction,
            single_test_envs=args.single_test_envs, hparams=hparams,
            test_env_counts=model_selection.test_env_counts(methods) if methods else None,
            speed_options=speed_options(args), paired_seeds=args.paired_seeds)

    settings = getattr(args, "config_settings", None)
    if settings is None:
        return job_list(args.datasets, args.algorithms, args.n_hparams_from, args.n_hparams,
                        args.hparams)
    units = config_file.launch_units(settings, args.config)
    return [train_args for unit in units for train_args in job_list(
        unit.datasets, [unit.algorithm], unit.n_hparams_from, unit.n_hparams, unit.hparams)]


def run_sweep(args):
    """The command `args.command` with `sweep`'s parsed arguments (see scripts/sweep.py)."""
    try:
        command_launchers.load_plugins()  # plug-in launchers tell how their jobs behave
    except PluginError as error:
        raise SweepError(str(error)) from None
    validation.check_sweep_numbers(args)   # a ValidationError (a BadInput) otherwise
    methods = resolve_selection_methods(args)
    records = None
    if args.best_hparams_from is not None:
        check_best_hparams_flags(args)
        methods = methods or [m for m in model_selection.SELECTION_METHODS   # all that fit
                              if not (args.single_test_envs and 2 in m.TEST_ENV_COUNTS)]
        records = load_finished_sweep(args)
        args.datasets = args.datasets or names_in_records(records, "dataset", datasets.DATASETS)
        args.algorithms = args.algorithms or names_in_records(records, "algorithm",
                                                              algorithms.ALGORITHMS)
    elif getattr(args, "config_settings", None) is None:
        args.n_hparams_from = 0 if args.n_hparams_from is None else args.n_hparams_from
        args.n_hparams = 20 if args.n_hparams is None else args.n_hparams
        args.datasets = args.datasets or default_datasets()
        args.algorithms = args.algorithms or algorithms.ALGORITHMS
    check_names(args, methods)
    launcher_fn = resolve_launcher(args)
    try:
        args.launcher_args = command_launchers.parse_launcher_args(args.launcher_args)
    except command_launchers.LauncherError as error:
        raise SweepError(str(error)) from None

    if records is not None:
        plan = best_hparams_plan(args, methods, records)
        if not plan:
            raise SweepError(f"nothing to re-run: no --selection_method selects a run in "
                             f"{args.best_hparams_from} (see the notes above)")
        args_list = [train_args for _, train_args in plan]
        sweep_dirs = [os.path.join(args.output_dir, method.__name__) for method, _ in plan]
    else:
        args_list = flags_args_list(args, methods)
        sweep_dirs = [args.output_dir] * len(args_list)
    if args.command == "launch":
        check_jobs(args, args_list)
        check_launcher_args(launcher_fn, args.launcher_args)
    jobs = [Job(train_args, sweep_dir) for train_args, sweep_dir in zip(args_list, sweep_dirs)]
    if args.command == "launch":
        check_not_foreign(jobs)

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
    if args.command == "launch":
        if not cmd_launch(args, jobs, launcher_fn):
            return
    elif args.command == "delete_incomplete":
        cmd_delete_incomplete(args, jobs)
    if records is not None and args.command == "launch":
        for sweep_dir in dict.fromkeys(sweep_dirs):
            print(f"Collect them with: python -m domainbed.scripts.collect_results "
                  f"--input_dir {shlex.quote(sweep_dir)}")
