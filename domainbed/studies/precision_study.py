"""bf16 against fp32 (docs/benchmarks.md, "bf16 and channels_last"): the paired accuracy
differences of two sweeps that differ only in `--precision`, and the CPU time of an update
under each precision and memory format.

    python -m domainbed.scripts.precision_study paired FP32_SWEEP_DIR BF16_SWEEP_DIR
    python -m domainbed.scripts.precision_study steptime
"""
import argparse
import glob
import json
import math
import os
import statistics
import time

from domainbed.lib.cli import OneLineErrorParser

CONFIGS = [("fp32", "contiguous"), ("bf16", "contiguous"), ("fp32", "channels_last"),
           ("bf16", "channels_last")]


def sweep_runs(sweep_dir):
    """{(algorithm, test env, trial_seed, hparams_seed): the run's records} of a sweep's
    single-test-env jobs."""
    runs = {}
    for path in sorted(glob.glob(os.path.join(sweep_dir, "*", "results.jsonl"))):
        with open(path) as f:
            records = [json.loads(line) for line in f if line.strip()]
        if not records or len(records[-1]["args"]["test_envs"]) != 1:
            continue
        args = records[-1]["args"]
        runs[args["algorithm"], args["test_envs"][0], args["trial_seed"],
             args["hparams_seed"]] = records
    return runs


def mean_and_error(values):
    """(mean, standard error of the mean); the error is nan for a single value."""
    mean = statistics.fmean(values)
    error = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return mean, error


def paired(fp32_dir, bf16_dir):
    """Lines: per algorithm, the final step's test-env accuracy (in and out splits) of the
    fp32 runs, the mean paired difference bf16 - fp32 ± its standard error, and each
    sweep's mean step time (records after the first, which times step 0 alone)."""
    fp32, bf16 = sweep_runs(fp32_dir), sweep_runs(bf16_dir)
    common = sorted(fp32.keys() & bf16.keys())
    lines = []
    for algorithm in sorted({key[0] for key in common}):
        keys = [key for key in common if key[0] == algorithm]
        for split in ("in", "out"):
            def acc(runs, key):
                return runs[key][-1][f"env{key[1]}_{split}_acc"]
            base = statistics.fmean(acc(fp32, key) for key in keys)
            mean, error = mean_and_error([acc(bf16, key) - acc(fp32, key) for key in keys])
            lines.append(f"{algorithm}: test env {split}-split accuracy, final step: fp32 "
                         f"{100 * base:.2f}%, bf16 - fp32 = {100 * mean:+.2f} ± "
                         f"{100 * error:.2f} points (n = {len(keys)} pairs)")
        for name, runs in (("fp32", fp32), ("bf16", bf16)):
            times = [statistics.fmean(r["step_time"] for r in runs[key][1:] or runs[key])
                     for key in keys]
            lines.append(f"{algorithm}: {name} step time (wall) {1000 * statistics.fmean(times):.2f}"
                         f" ms, mean over {len(times)} runs")
    return lines


def step_times(algorithms=("ERM", "FGMix"), dataset="RotatedMNIST5k", shape=(1, 28, 28),
               classes=10, domains=5, steps=20, rounds=5):
    """{(algorithm, precision, memory format): median CPU ms per update} with the dataset's
    default hparams on random inputs of `shape` (RotatedMNIST5k's: 1x28x28, 10 classes, 5
    training domains), 1 thread, time.process_time; the four configurations are timed in
    interleaved rounds whose order rotates."""
    import torch

    from domainbed import hparams_registry
    from domainbed.algorithms import get_algorithm_class
    from domainbed.training import precision

    torch.set_num_threads(1)
    cpu = torch.device("cpu")
    setups = {}
    for name in algorithms:
        hparams = hparams_registry.default_hparams(name, dataset)
        g = torch.Generator().manual_seed(0)
        batch = hparams["batch_size"]
        data = [(torch.randn(batch, *shape, generator=g),
                 torch.randint(0, classes, (batch,), generator=g)) for _ in range(domains)]
        for p, m in CONFIGS:
            args = argparse.Namespace(precision=p, memory_format=m)
            torch.manual_seed(0)
            algorithm = precision.prepare_algorithm(
                get_algorithm_class(name)(shape, classes, domains, hparams), args)
            convert = precision.input_converter(args)
            setups[name, p, m] = (algorithm, args, [(convert(x), y) for x, y in data])

    def run(key, n):
        algorithm, args, data = setups[key]
        for _ in range(n):
            with precision.autocast(args, cpu):
                algorithm.update(data)

    for key in setups:
        run(key, 3)   # warm-up
    times = {key: [] for key in setups}
    order = list(setups)
    for r in range(rounds):
        for key in order[r % len(order):] + order[:r % len(order)]:
            start = time.process_time()
            run(key, steps)
            times[key].append((time.process_time() - start) / steps * 1000)
    return {key: statistics.median(values) for key, values in times.items()}


def main(argv=None):
    parser = OneLineErrorParser(prog="precision_study", description=__doc__.split("\n\n")[0],
                                hint="see --help")
    commands = parser.add_subparsers(dest="command", required=True)
    pair = commands.add_parser("paired", help="paired accuracies of an fp32 and a bf16 sweep")
    pair.add_argument("fp32_dir")
    pair.add_argument("bf16_dir")
    steps = commands.add_parser("steptime", help="CPU ms per update, 1 thread")
    steps.add_argument("--algorithms", default="ERM,FGMix")
    args = parser.parse_args(argv)
    if args.command == "paired":
        for line in paired(args.fp32_dir, args.bf16_dir):
            print(line)
    else:
        for (name, p, m), ms in step_times(args.algorithms.split(",")).items():
            print(f"{name}: {p} {m}: {ms:.2f} CPU ms/update (median of 5 rounds)")
    return 0
