"""Is each of FGMix's mechanisms at work? A table from the records, torch-free.

For every algorithm of the mixing family in a sweep, over its default-hparams runs (draw 0):
how often and how far the mixed points leave the members' hull, how peaked the policy is,
whether the mixed loss is a real second task, whether the look-ahead lands where the model
goes, and how far the learned metric moves the weights from the fixed metric's. The keys are
the diagnostics `GroupMixBase.update()` logs (docs/method.md, Diagnostics).
"""
import collections

import numpy as np

# (column, what it is, how a run's records become one number). Each can fail: none holds by
# construction for every variant (frac_extrapolating = 1 and min_weight = -κ do for version 2,
# so they are not shown; docs/method.md, Diagnostics).
COLUMNS = [
    ("extrap", "frac_extrapolating at the last record (1 - the share that interpolates)",
     lambda rs: rs[-1]["frac_extrapolating"]),
    ("mass", "negative_mass at the last record: how far, in weight", lambda rs: rs[-1]["negative_mass"]),
    ("sd_groups", "negative_mass_std at the last record: how much it varies across groups",
     lambda rs: rs[-1]["negative_mass_std"]),
    ("sd_steps", "standard deviation of negative_mass over the records after the first",
     lambda rs: float(np.std([r["negative_mass"] for r in rs[1:]]))),
    ("amount_sd", "amount_std at the last record (version 3: κ_g across groups)",
     lambda rs: rs[-1]["amount_std"]),
    ("mix/src", "mixed_source_ratio at the last record: how hard the mixed points are",
     lambda rs: rs[-1]["mixed_source_ratio"]),
    ("dom_pref", "domain_preference at the last record (0: no preferred domain)",
     lambda rs: rs[-1]["domain_preference"]),
    ("amt~dom", "amount_domain_r2 at the last record (share of κ_g's variance the domain "
     "explains)", lambda rs: rs[-1]["amount_domain_r2"]),
    ("metric_d", "metric_distance at the last record: RMS of m - 1 (0 = the fixed metric)",
     lambda rs: rs[-1]["metric_distance"]),
    ("KL_fixed", "policy_kl_fixed at the last record", lambda rs: rs[-1]["policy_kl_fixed"]),
    ("meta/nll", "largest meta_nll_ratio over the records",
     lambda rs: max(r["meta_nll_ratio"] for r in rs)),
    ("surr_corr", "surrogate_corr at the last record: per-group mixed loss, features vs images",
     lambda rs: rs[-1]["surrogate_corr"]),
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
    header = f"{'Algorithm':<12}{'runs':>5}" + "".join(f"{c:>10}" for c, _, _ in COLUMNS)
    lines = ["\n-------- Mechanisms (default-hparams runs, mean over runs; docs/method.md)", header]
    for name, n, values in rows:
        cells = "".join(f"{'-':>10}" if values[c] is None else f"{values[c]:>10.4f}"
                        for c, _, _ in COLUMNS)
        lines.append(f"{name:<12}{n:>5}{cells}")
    lines += [f"  {c}: {meaning}" for c, meaning, _ in COLUMNS]
    return "\n".join(lines)
