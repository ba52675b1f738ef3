"""`--best_hparams_from DIR`: the hparams each selection method selected in a finished
sweep, re-run with more trials as the jobs of a hand-written sweep (torch-free)."""
import json
import os
import sys

from domainbed import model_selection
from domainbed.lib import reporting
from domainbed.lib.query import Q
from domainbed.sweeps.errors import SweepError
from domainbed.sweeps.job_list import make_args_list


def note(message):
    print(f"sweep: note: {message}", file=sys.stderr)



def check_best_hparams_flags(args):
    if args.hparams is not None:
        raise SweepError("--hparams and --best_hparams_from contradict each other (the hparams "
                         "come from the runs in DIR): drop --hparams")
    if args.n_hparams is not None or args.n_hparams_from is not None:
        raise SweepError("--n_hparams and --n_hparams_from do not apply with --best_hparams_from "
                         "(each job re-runs the hparams_seed a method selected): drop them")
    if not os.path.isdir(args.best_hparams_from):
        raise SweepError(f"--best_hparams_from {args.best_hparams_from!r} is not a directory: give "
                         "a finished sweep's --output_dir")



def load_finished_sweep(args):
    """The records of --best_hparams_from DIR, read as collect_results reads them."""
    try:
        report = reporting.load_sweep(args.best_hparams_from)
    except OSError as error:
        raise SweepError(f"cannot read --best_hparams_from {args.best_hparams_from} "
                         f"({error.strerror or error}); give a readable sweep directory")
    if not len(report.records):
        raise SweepError(f"--best_hparams_from {args.best_hparams_from} holds no records "
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

