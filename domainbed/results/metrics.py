"""`collect_results --metric NAME`: tables of a metric beyond accuracy (torch-free).

Records of runs trained with `--metrics all` carry `<split>_<metric>` beside upstream's
`<split>_acc` (lib/classification_metrics.py). The tables and the selection methods read
`_acc` keys, so a metric is reported by handing them records in which the keys they read
stand for it: a *view* of the records, the selection code untouched.

- `select_by="acc"` (the default): the selection methods choose exactly the runs and steps
  they choose on accuracy; only the reported test value, `env{t}_in_acc` of the records with
  one test environment t, becomes that split's metric. (Leave-one-domain-out's validation
  reads `env{v}_in_acc` of the runs with two test environments, which keep their accuracy.)
- `select_by="metric"`: every `_acc` key becomes the metric's, so the methods also choose
  on it (training-domain validation then averages the training domains' out-split metric).

An undefined AUROC (a split with one class) is NaN in the tables.
"""
import re

from domainbed.lib import classification_metrics
from domainbed.lib.cli import CommandError

METRICS = ("acc",) + classification_metrics.METRICS
SELECT_BY = ("acc", "metric")
_SPLIT_ACC = re.compile(r"^(env\d+_(?:in|out))_acc$")


class MetricMissing(CommandError):
    """Records without the metric asked for (trained without --metrics all)."""
    exit_code = 2


def _number(value):
    return float("nan") if value is None else value


def _view(record, metric, select_by):
    test_envs = record["args"]["test_envs"]
    view = dict(record)
    if select_by == "metric":
        for key in record:
            match = _SPLIT_ACC.match(key)
            if match:
                view[key] = _number(record[f"{match.group(1)}_{metric}"])
    elif len(test_envs) == 1:
        split = f"env{test_envs[0]}_in"
        view[f"{split}_acc"] = _number(record[f"{split}_{metric}"])
    return view


def check_records(records, metric):
    """A MetricMissing naming how many records lack `metric` and what to do."""
    if metric == "acc":
        return
    lacking = [r for r in records
               if f"env{r['args']['test_envs'][0]}_in_{metric}" not in r]
    if lacking:
        example = lacking[0]["args"].get("output_dir", "?")
        raise MetricMissing(f"--metric {metric}: {len(lacking)} of {len(records)} records have "
                            f"no {metric} (e.g. {example}); train with --metrics all (sweep "
                            f"launch ... --metrics all), or use --metric acc")


def metric_view(records, metric, select_by="acc"):
    """`records` (a Q or list of record dicts) with the `_acc` keys the tables read standing
    for `metric`; the records themselves are not changed."""
    from domainbed.results.query import Q

    if metric == "acc":
        return records
    check_records(records, metric)
    return Q([_view(record, metric, select_by) for record in records])


def header(metric, select_by):
    """The line printed above the tables when they are not upstream's accuracy tables."""
    chosen = "accuracy" if select_by == "acc" else metric
    return f"Metric: {metric} (x 100; runs selected on {chosen})"
