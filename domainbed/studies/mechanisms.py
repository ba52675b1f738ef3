"""Is each of FGMix's mechanisms at work? A table from the records, torch-free.

For every algorithm of the mixing family in a sweep, over its default-hparams runs (draw 0):
how often and how far the mixed points leave the members' hull, how peaked the policy is,
whether the mixed loss is a real second task, whether the look-ahead lands where the model
goes, and how far the learned metric moves the weights from the fixed metric's. The keys are
the diagnostics `GroupMixBase.update()` logs (docs/method.md, Diagnostics).
"""
import collections

import numpy as np

# (column, what it is, how a run's records become one number)
COLUMNS = [
    ("extrap_min", "smallest frac_extrapolating over the records after the first",
     lambda rs: min(r["frac_extrapolating"] for r in rs[1:])),
    ("extrap_last", "frac_extrapolating at the last record",
     lambda rs: rs[-1]["frac_extrapolating"]),
    ("min_weight", "most negative weight, last record", lambda rs: rs[-1]["min_weight"]),
    ("outside", "outside_ratio at the last record", lambda rs: rs[-1]["outside_ratio"]),
    ("entropy", "policy_entropy at the last record (1 = uniform)",
     lambda rs: rs[-1]["policy_entropy"]),
    ("mix/nll", "mixed_loss / nll at the last record",
     lambda rs: rs[-1]["mixed_loss"] / rs[-1]["nll"]),
    ("meta/nll", "largest meta_nll_ratio over the records",
     lambda rs: max(r["meta_nll_ratio"] for r in rs)),
    ("KL_fixed", "policy_kl_fixed at the last record", lambda rs: rs[-1]["policy_kl_fixed"]),
]


def run_records(records):
    """{(algorithm, dataset, test envs, trial): records by step} of the draw-0 runs that
    log the family's diagnostics."""
    runs = collections.defaultdict(list)
    for record in records:
        args = record["args"]
        if args["hparams_seed"] == 0 and "frac_extrapolating" in record:
            key = (args["algorithm"], args["dataset"], tuple(args["test_envs"]), args["trial_seed"])
            runs[key].append(record)
    return {key: sorted(rs, key=lambda r: r["step"]) for key, rs in runs.items()}


def mechanism_rows(records, order=()):
    """[(algorithm, n runs, {column: mean over runs, or None where not logged})]."""
    by_algorithm = collections.defaultdict(list)
    for key, rs in run_records(records).items():
        if len(rs) > 1:
            by_algorithm[key[0]].append(rs)
    names = [a for a in order if a in by_algorithm] + sorted(set(by_algorithm) - set(order))
    rows = []
    for name in names:
        values = {}
        for column, _, measure in COLUMNS:
            try:
                values[column] = float(np.mean([measure(rs) for rs in by_algorithm[name]]))
            except (KeyError, ZeroDivisionError):
                values[column] = None
        rows.append((name, len(by_algorithm[name]), values))
    return rows


def format_mechanisms(rows):
    header = f"{'Algorithm':<12}{'runs':>5}" + "".join(f"{c:>12}" for c, _, _ in COLUMNS)
    lines = ["\n-------- Mechanisms (default-hparams runs, mean over runs; docs/method.md)", header]
    for name, n, values in rows:
        cells = "".join(f"{'-':>12}" if values[c] is None else f"{values[c]:>12.3f}"
                        for c, _, _ in COLUMNS)
        lines.append(f"{name:<12}{n:>5}{cells}")
    lines += [f"  {c}: {meaning}" for c, meaning, _ in COLUMNS]
    return "\n".join(lines)
