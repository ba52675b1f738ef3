"""The model selection methods of DomainBed (torch-free; upstream's `domainbed.model_selection`).

A method turns the records of one (trial_seed, dataset, algorithm, test_env) group into one
test accuracy in three steps:
* `run_acc(run_records)`: the records of one hparams_seed -> {'val_acc', 'test_acc'} or None
  (this is where early stopping over checkpoints happens);
* `hparams_accs(records)`: run_acc for every hparams_seed, best first (on a val_acc tie the
  higher hparams_seed ranks first, as upstream);
* `sweep_acc(records)`: the test_acc of the best run, or None.
Methods are used through classmethods only, as upstream.

Ours, for `sweep`: each method says which runs it reads (`TEST_ENV_COUNTS`: the numbers of
test envs of those runs), so a sweep can launch only what the chosen methods need
(`test_env_counts`); `get_selection_method(name)` looks a method up by its class name;
`selected_runs` lists the run a method selects in every group (`--best_hparams_from`, the
unit-test suite, plots), and `selected_accuracies` the accuracy it selects per (dataset,
test env, trial) cell and algorithm (the studies' paired comparisons).
"""
import numpy as np

from domainbed.results.query import Q
from domainbed.results.records import get_grouped_records


def get_test_records(records):
    """The records of runs with exactly one test env (the only ones IID/oracle can use)."""
    return records.filter(lambda record: len(record["args"]["test_envs"]) == 1)


class SelectionMethod:
    """Abstract: subclasses define `name` and `run_acc`."""

    name = None
    TEST_ENV_COUNTS = (1,)   # ours: the runs it reads have this many test envs

    def __init__(self):
        raise TypeError("selection methods are used through their classmethods only")

    @classmethod
    def run_acc(cls, run_records):
        raise NotImplementedError

    @classmethod
    def hparams_accs(cls, records):
        """[(run_acc, run_records)] over hparams_seeds, sorted best first."""
        scored = (Q(records)
                  .group("args.hparams_seed")
                  .map(lambda _, run_records: (cls.run_acc(run_records), run_records))
                  .filter(lambda pair: pair[0] is not None)
                  .sorted(key=lambda pair: pair[0]["val_acc"]))
        return scored[::-1]

    @classmethod
    def sweep_acc(cls, records):
        """The test accuracy of the best hparams, or None when no run qualifies."""
        ranked = cls.hparams_accs(records)
        if len(ranked):
            return ranked[0][0]["test_acc"]
        return None


class OracleSelectionMethod(SelectionMethod):
    """Validate on the test domain's out-split, at the last checkpoint (no early stopping)."""

    name = "test-domain validation set (oracle)"

    @classmethod
    def run_acc(cls, run_records):
        test_records = get_test_records(Q(run_records))
        if not len(test_records):
            return None
        test_env = test_records[0]["args"]["test_envs"][0]
        last = test_records.sorted(key=lambda record: record["step"])[-1]
        return {"val_acc": last[f"env{test_env}_out_acc"],
                "test_acc": last[f"env{test_env}_in_acc"]}


class IIDAccuracySelectionMethod(SelectionMethod):
    """Validate on the training domains' out-splits; the best checkpoint wins."""

    name = "training-domain validation set"
    test_acc_prefix = ""   # the auto-lr variant reads 'fd_env{t}_in_acc' instead

    @classmethod
    def _step_acc(cls, record):
        test_env = record["args"]["test_envs"][0]
        val_accs = []
        env = 0
        while f"env{env}_out_acc" in record:
            if env != test_env:
                val_accs.append(record[f"env{env}_out_acc"])
            env += 1
        return {"val_acc": float(np.mean(val_accs)),
                "test_acc": record[f"{cls.test_acc_prefix}env{test_env}_in_acc"]}

    @classmethod
    def run_acc(cls, run_records):
        test_records = get_test_records(Q(run_records))
        if not len(test_records):
            return None
        return test_records.map(cls._step_acc).argmax("val_acc")


class IIDAutoLRAccuracySelectionMethod(IIDAccuracySelectionMethod):
    """ERM++'s variant: the test accuracy of the full-data ('fd_') evaluation."""

    name = "auto lr training-domain validation set"
    test_acc_prefix = "fd_"

    @classmethod
    def hparams_accs(cls, records):
        return super().hparams_accs(merge_records(Q(records)))


def merge_records(records):
    """Collapse records whose args agree once holdout_fraction is ignored (dict.update order)."""
    merged = {}
    for record in records:
        args = {k: v for k, v in record["args"].items() if k != "holdout_fraction"}
        merged.setdefault(_frozen(args), {}).update(record)
    return Q(list(merged.values()))


def _frozen(value):
    import json
    return json.dumps(value, sort_keys=True)


class LeaveOneOutSelectionMethod(SelectionMethod):
    """Validate on a held-out training domain, using the pairwise (2 test env) runs."""

    name = "leave-one-domain-out cross-validation"
    TEST_ENV_COUNTS = (1, 2)   # the pairs [t, v] validate on v

    @classmethod
    def _step_acc(cls, step_records):
        single = get_test_records(step_records)
        if len(single) != 1:
            return None
        test_env = single[0]["args"]["test_envs"][0]
        n_envs = 0
        while f"env{n_envs}_out_acc" in step_records[0]:
            n_envs += 1
        val_accs = [None] * n_envs
        for record in step_records:
            pair = record["args"]["test_envs"]
            if len(pair) != 2 or test_env not in pair:
                continue
            val_env = pair[0] if pair[1] == test_env else pair[1]
            val_accs[val_env] = record[f"env{val_env}_in_acc"]
        others = [acc for env, acc in enumerate(val_accs) if env != test_env]
        if any(acc is None for acc in others):
            return None
        return {"val_acc": float(np.sum(others) / (n_envs - 1)),
                "test_acc": single[0][f"env{test_env}_in_acc"]}

    @classmethod
    def run_acc(cls, run_records):
        step_accs = (Q(run_records)
                     .group("step")
                     .map(lambda _, step_records: cls._step_acc(step_records))
                     .filter_not_none())
        if len(step_accs):
            return step_accs.argmax("val_acc")
        return None


# The methods collect_results reports, in its order.
SELECTION_METHODS = [IIDAccuracySelectionMethod, LeaveOneOutSelectionMethod, OracleSelectionMethod]

# Ours: every method by class name (collect_results --auto_lr uses the last one).
METHODS_BY_NAME = {method.__name__: method for method in
                   SELECTION_METHODS + [IIDAutoLRAccuracySelectionMethod]}


def get_selection_method(name):
    """The method of this class name; an UnknownNameError with "did you mean" otherwise."""
    from domainbed.lib.misc import did_you_mean
    from domainbed.lib.registry import UnknownNameError

    if name not in METHODS_BY_NAME:
        hint = did_you_mean(name, METHODS_BY_NAME)
        starting = [known for known in METHODS_BY_NAME
                    if known.lower().startswith(str(name).lower())]
        if not hint and starting:   # e.g. 'IID' or 'Oracle'
            hint = f" Did you mean {starting[0]!r}?"
        raise UnknownNameError(f"unknown selection method {name!r}.{hint} "
                               f"Known: {', '.join(METHODS_BY_NAME)}.")
    return METHODS_BY_NAME[name]


def test_env_counts(methods):
    """The numbers of test envs of the runs any of `methods` reads (sorted)."""
    return sorted({count for method in methods for count in method.TEST_ENV_COUNTS})


def selected_runs(records, selection_method):
    """For every (trial_seed, dataset, algorithm, test_env) group of `records` in which the
    method selects a run: {trial_seed, dataset, algorithm, test_env, run_acc, records}, where
    `records` are the selected run's (one hparams_seed's) and run_acc its scores."""
    selected = []
    for group in get_grouped_records(records):
        ranked = selection_method.hparams_accs(group["records"])
        if len(ranked):
            run_acc, run_records = ranked[0]
            selected.append({**group, "run_acc": run_acc, "records": Q(run_records)})
    return selected


def selected_accuracies(records, selection_method=IIDAccuracySelectionMethod, max_step=None):
    """{(dataset, test_env, trial_seed): {algorithm: test accuracy}}: what the method selects
    in every (trial_seed, dataset, algorithm, test_env) group it can score, keyed by the
    cells that paired comparisons pair on (`results.paired`). `max_step`: read only the
    checkpoints up to that step (None: all)."""
    if max_step is not None:
        records = Q([record for record in records if record["step"] <= max_step])
    cells = {}
    for group in get_grouped_records(records):
        accuracy = selection_method.sweep_acc(group["records"])
        if accuracy is not None:
            key = (group["dataset"], group["test_env"], group["trial_seed"])
            cells.setdefault(key, {})[group["algorithm"]] = accuracy
    return cells
