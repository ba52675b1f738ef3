"""Upstream's job enumeration: every (trial, dataset, algorithm, test envs, hparams draw)
as train args, with upstream's seeds (torch-free)."""
import copy
import json

from domainbed import datasets
from domainbed.lib.misc import seed_hash
from domainbed.sweeps.errors import SweepError


def all_test_env_combinations(n):
    """[i] then [i, j] for every j > i, for each i: every 1- and 2-test-env combination."""
    assert n >= 3
    for i in range(n):
        yield [i]
        for j in range(i + 1, n):
            yield [i, j]



# What replaces the algorithm's name in a paired run's seed: a fixed string, so that no
# algorithm's paired seed equals its upstream seed by accident.
PAIRED = "paired"


def run_seed(dataset, algorithm, test_envs, hparams_seed, trial_seed, paired=False):
    """A job's --seed. Upstream's includes the algorithm's name, so two algorithms of one
    cell differ in initialisation, data order and every draw of their own generators.
    Paired (common random numbers): the same seed for every algorithm of the cell, so a
    paired difference measures the algorithms, not their seeds."""
    return seed_hash(dataset, PAIRED if paired else algorithm, test_envs, hparams_seed,
                     trial_seed)


def make_args_list(n_trials, dataset_names, algorithms, n_hparams_from, n_hparams, steps,
                   data_dir, task, holdout_fraction, single_test_envs, hparams,
                   test_env_counts=None, speed_options=None, paired_seeds=False):
    """Upstream's job list. Ours: the number of environments may depend on the sweep's
    --hparams (JSON string or None) and, for datasets such as `Folder`, on --data_dir; each
    dataset says which test envs a sweep runs (`sweep_test_envs`; upstream's enumeration
    unless the dataset overrides it). `test_env_counts` (from --selection_method): keep only
    the jobs with that many test envs, the ones those selection methods read (None: all).
    Hparams or data a dataset refuses are a SweepError, before any job is listed.
    `speed_options`: train.py's speed flags (name -> value) added to every job's args.
    `paired_seeds` (ours, opt-in): `run_seed` without the algorithm's name, so that every
    algorithm of a (dataset, test envs, draw, trial) cell gets the same --seed."""
    overrides = json.loads(hparams) if hparams is not None else None
    pairs_needed = test_env_counts is None or 2 in test_env_counts
    test_env_lists = {}
    for dataset in dataset_names:
        try:
            n_envs = datasets.num_environments(dataset, overrides, data_dir)
        except (datasets.DatasetArgumentError, datasets.DatasetNotFoundError) as error:
            from_data = datasets.get_dataset_class(dataset).ENVIRONMENTS_FROM_DATA
            flag = "" if from_data else "--hparams: "
            raise SweepError(f"{flag}{' '.join(str(error).split())}") from None
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
                            "seed": run_seed(dataset, algorithm, test_envs, hparams_seed,
                                             trial_seed, paired_seeds),
                        }
                        if steps is not None:
                            train_args["steps"] = steps
                        if hparams is not None:
                            train_args["hparams"] = hparams
                        train_args.update(speed_options or {})
                        args_list.append(train_args)
    return args_list



def default_datasets():
    """Upstream's default: every dataset without 'Debug' in its name. Ours: not those that
    read their environments from --data_dir (`Folder`): name them with --datasets."""
    return [d for d in datasets.DATASETS if "Debug" not in d
            and not datasets.get_dataset_class(d).ENVIRONMENTS_FROM_DATA]

