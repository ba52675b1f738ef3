"""Paired differences to ERM of runs that differ by a fixed hparam (a one-at-a-time study).

    python -m domainbed.scripts.hparam_study --reference_dir curves/sweep --input_dir gk/sweep

Each run of `--input_dir` belongs to the variant named by its algorithm and its `--hparams`
string (e.g. `FGMix {"fgmix_gamma": 0.3}`); `--reference_dir` holds the ERM runs to pair
with (and, optionally, the same algorithm at its defaults). Every run is selected as
DomainBed does (training-domain validation over its checkpoints up to `--max_step`), and
each variant is compared with ERM in the same (dataset, test environment, trial) cell:
mean ± standard error of the paired difference in points, and how often the variant wins.
Only finished jobs are read. Torch-free.
"""
import argparse
import collections

import numpy as np

from domainbed import model_selection
from domainbed.lib import reporting
from domainbed.lib.cli import OneLineErrorParser
from domainbed.lib.query import Q

REFERENCE = "ERM"


def variant_name(record):
    hparams = record["args"].get("hparams") or ""
    return record["args"]["algorithm"] + (f" {hparams}" if hparams else " (defaults)")


def selected_accuracies(records, max_step):
    """{(dataset, test_env, trial_seed): selected test accuracy} under training-domain
    validation, reading the checkpoints up to `max_step` (None: all)."""
    method = model_selection.IIDAccuracySelectionMethod
    kept = Q([r for r in records if max_step is None or r["step"] <= max_step])
    cells = {}
    for group in reporting.get_grouped_records(kept):
        ranked = method.hparams_accs(group["records"])
        if len(ranked):
            key = (group["dataset"], group["test_env"], group["trial_seed"])
            cells[key] = ranked[0][0]["test_acc"]
    return cells


def paired_rows(records, max_step=None):
    """[(variant, dataset or 'all', n cells, mean accuracy, mean difference, s.e., wins)]."""
    by_variant = collections.defaultdict(list)
    for record in records:
        by_variant[variant_name(record)].append(record)
    reference = selected_accuracies(by_variant.pop(f"{REFERENCE} (defaults)", []), max_step)
    rows = []
    for variant in sorted(by_variant):
        accs = selected_accuracies(by_variant[variant], max_step)
        datasets = sorted({key[0] for key in accs})
        for dataset in datasets + (["all"] if len(datasets) > 1 else []):
            keys = [k for k in accs if k in reference and dataset in ("all", k[0])]
            if not keys:
                continue
            diffs = np.array([100 * (accs[k] - reference[k]) for k in keys])
            se = diffs.std(ddof=1) / np.sqrt(len(diffs)) if len(diffs) > 1 else float("nan")
            rows.append((variant, dataset, len(keys), float(np.mean([100 * accs[k] for k in keys])),
                         float(diffs.mean()), float(se), int((diffs > 0).sum())))
    return rows


def format_rows(rows):
    lines = [f"| variant | dataset | cells | accuracy | minus {REFERENCE} (mean ± s.e.) | "
             f"better than {REFERENCE} in |", "|---|---|---|---|---|---|"]
    for variant, dataset, n, acc, diff, se, wins in rows:
        lines.append(f"| {variant} | {dataset} | {n} | {acc:.1f} | {diff:+.1f} ± {se:.1f} | "
                     f"{wins}/{n} |")
    return "\n".join(lines)


def main(argv=None):
    parser = OneLineErrorParser(prog="python -m domainbed.scripts.hparam_study",
                                description=__doc__.split("\n")[0])
    parser.add_argument("--input_dir", required=True, nargs="+",
                        help="sweep directories of the variants")
    parser.add_argument("--reference_dir", nargs="*", default=[],
                        help="sweep directories with the ERM runs to pair with")
    parser.add_argument("--max_step", type=int, default=None,
                        help="select among checkpoints up to this step (default: all)")
    args = parser.parse_args(argv)
    records = []
    for directory in args.input_dir + args.reference_dir:
        records += list(reporting.load_sweep(directory, True).records)
    rows = paired_rows(records, args.max_step)
    if not rows:
        parser.error("no variant has runs in the same (dataset, test env, trial) cells as "
                     f"{REFERENCE} at its defaults: give the ERM runs with --reference_dir")
    print(format_rows(rows))
    return 0

