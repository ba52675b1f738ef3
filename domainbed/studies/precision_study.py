"""bf16 against fp32 (docs/benchmarks.md, "bf16 and channels_last"): the paired accuracy
differences of two sweeps that differ only in `--precision` (step times: the benchmark
command's `--precision` and `--memory_format`).

    python -m domainbed.scripts.precision_study paired FP32_SWEEP_DIR BF16_SWEEP_DIR
"""
import os
import statistics

from domainbed.errors import BadInput
from domainbed.lib.cli import OneLineErrorParser
from domainbed.results import paired as paired_comparison
from domainbed.results.records import load_sweep


class StudyError(BadInput, ValueError):
    """A sweep directory the study cannot compare; the message says what to do (exit 2)."""


def sweep_runs(sweep_dir):
    """{(algorithm, test env, trial_seed, hparams_seed): the run's records, in step order}
    of a sweep's finished single-test-env jobs (read as collect_results reads them)."""
    if not os.path.isdir(sweep_dir):
        raise StudyError(f"{sweep_dir} is not a directory; give the --output_dir of a sweep")
    runs = {}
    for record in load_sweep(sweep_dir, completed_only=True).records:
        args = record["args"]
        if len(args["test_envs"]) == 1:
            key = (args["algorithm"], args["test_envs"][0], args["trial_seed"],
                   args["hparams_seed"])
            runs.setdefault(key, []).append(record)
    return {key: sorted(records, key=lambda r: r["step"]) for key, records in runs.items()}


def check_precision(runs, expected, sweep_dir, position):
    """Refuse a sweep whose runs are not all of `expected` precision (their records'
    `args.precision`; upstream's records have none: fp32)."""
    found = sorted({records[0]["args"].get("precision", "fp32") for records in runs.values()})
    if found and found != [expected]:
        raise StudyError(f"{sweep_dir} holds runs with --precision {', '.join(found)}, but the "
                         f"{position} sweep must be {expected}: give an fp32 sweep, then a "
                         "bf16 sweep of the same jobs")


def paired(fp32_dir, bf16_dir):
    """Lines: per algorithm, the final step's test-env accuracy (in and out splits) of the
    fp32 runs, the mean paired difference bf16 - fp32 ± its standard error, and each
    sweep's mean step time (records after the first, which times step 0 alone)."""
    if os.path.realpath(fp32_dir) == os.path.realpath(bf16_dir):
        raise StudyError(f"{fp32_dir} is given twice; give an fp32 sweep, then a bf16 sweep")
    fp32, bf16 = sweep_runs(fp32_dir), sweep_runs(bf16_dir)
    check_precision(fp32, "fp32", fp32_dir, "first")
    check_precision(bf16, "bf16", bf16_dir, "second")
    common = sorted(fp32.keys() & bf16.keys())
    if not common:
        raise StudyError(f"{fp32_dir} and {bf16_dir} have no finished single-test-env job in "
                         "common; run the same sweep with --precision fp32 and bf16")
    lines = []
    for algorithm in sorted({key[0] for key in common}):
        keys = [key for key in common if key[0] == algorithm]
        for split in ("in", "out"):
            cells = {key: {name: runs[key][-1][f"env{key[1]}_{split}_acc"]
                           for name, runs in (("fp32", fp32), ("bf16", bf16))} for key in keys}
            result = paired_comparison.paired(cells, "bf16", "fp32")
            lines.append(f"{algorithm}: test env {split}-split accuracy, final step: fp32 "
                         f"{100 * result.reference_mean:.2f}%, bf16 - fp32 = "
                         f"{100 * result.mean:+.2f} ± {100 * result.se:.2f} points "
                         f"(n = {result.n} pairs)")
        for name, runs in (("fp32", fp32), ("bf16", bf16)):
            times = [statistics.fmean(r["step_time"] for r in runs[key][1:] or runs[key])
                     for key in keys]
            lines.append(f"{algorithm}: {name} step time (wall) {1000 * statistics.fmean(times):.2f}"
                         f" ms, mean over {len(times)} runs")
    return lines


def main(argv=None):
    parser = OneLineErrorParser(prog="precision_study", description=__doc__.split("\n\n")[0],
                                hint="see --help")
    commands = parser.add_subparsers(dest="command", required=True)
    pair = commands.add_parser("paired", help="paired accuracies of an fp32 and a bf16 sweep")
    pair.add_argument("fp32_dir")
    pair.add_argument("bf16_dir")
    args = parser.parse_args(argv)
    try:
        lines = paired(args.fp32_dir, args.bf16_dir)
    except StudyError as error:
        parser.exit(2, f"precision_study: error: {error}\n")
    for line in lines:
        print(line)
    return 0
