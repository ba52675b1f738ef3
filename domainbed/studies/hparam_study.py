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
import collections

from domainbed.lib.cli import OneLineErrorParser
from domainbed.results.paired import paired
from domainbed.results.records import load_sweep
from domainbed.results.selection import selected_accuracies
from domainbed.results.tables import Column, markdown_table

REFERENCE = "ERM"


def variant_name(record):
    hparams = record["args"].get("hparams") or ""
    return record["args"]["algorithm"] + (f" {hparams}" if hparams else " (defaults)")


def variant_accuracies(records, variant, max_step):
    """{(dataset, test_env, trial_seed): {variant: selected test accuracy}} of one variant's
    records, under training-domain validation up to `max_step` (None: all checkpoints)."""
    cells = selected_accuracies(records, max_step=max_step)
    return {key: {variant: accuracy} for key, by_algorithm in cells.items()
            for accuracy in by_algorithm.values()}


def paired_rows(records, max_step=None):
    """[(variant, dataset or 'all', n cells, mean accuracy, mean difference, s.e., wins)]."""
    by_variant = collections.defaultdict(list)
    for record in records:
        by_variant[variant_name(record)].append(record)
    reference_name = f"{REFERENCE} (defaults)"
    reference = variant_accuracies(by_variant.pop(reference_name, []), reference_name, max_step)
    rows = []
    for variant in sorted(by_variant):
        accs = variant_accuracies(by_variant[variant], variant, max_step)
        cells = {key: {**reference[key], **accs[key]} for key in accs if key in reference}
        datasets = sorted({key[0] for key in accs})
        for dataset in datasets + (["all"] if len(datasets) > 1 else []):
            result = paired(cells, variant, reference_name, scale=100,
                            where=lambda key: dataset in ("all", key[0]))
            if result is None:
                continue
            rows.append((variant, dataset, result.n, result.value_mean, result.mean,
                         result.se, result.wins))
    return rows


COLUMNS = [Column("variant"), Column("dataset"), Column("cells"),
           Column("accuracy", fmt="{:.1f}"),
           Column(f"minus {REFERENCE} (mean ± s.e.)", fmt="{:+.1f} ± {:.1f}"),
           Column(f"better than {REFERENCE} in", fmt="{}/{}")]


def format_rows(rows):
    """`paired_rows` as a Markdown table."""
    return "\n".join(markdown_table(COLUMNS, [
        (variant, dataset, n, acc, (diff, se), (wins, n))
        for variant, dataset, n, acc, diff, se, wins in rows]))


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
        records += list(load_sweep(directory, True).records)
    rows = paired_rows(records, args.max_step)
    if not rows:
        parser.error("no variant has runs in the same (dataset, test env, trial) cells as "
                     f"{REFERENCE} at its defaults: give the ERM runs with --reference_dir")
    print(format_rows(rows))
    return 0

