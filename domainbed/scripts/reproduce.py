"""The main job behind `./reproduce.sh`.

Offline (default): a sweep of ERM, Mixup, SAM, CORAL and the FGMix family on the offline
datasets (data shipped by pip packages: no download, no GPU), run on this machine with the
`local` launcher, then the training-domain-validation and oracle tables, the ablation table
(ERM -> Mixup -> InterpMix -> ExtrapMix -> GMix -> FGMix) and per-dataset plots. Finished
jobs are reused and interrupted ones resume, so running it again continues where it stopped.

--full: the DomainBed protocol (all test-environment combinations, 20 hparam draws, 3 trials)
on the real datasets through a launcher, then `collect_results --compare_upstream`.

This module only drives the public commands (`sweep`, `collect_results`) and reads records
through `lib.reporting`; it imports no torch itself.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

OFFLINE_DATASETS = ["RotatedMNIST5k", "ColoredMNIST5k", "DigitsDG5k"]
FULL_DATASETS = ["ColoredMNIST", "RotatedMNIST", "VLCS", "PACS", "OfficeHome",
                 "TerraIncognita", "DomainNet"]
ALGORITHMS = ["ERM", "Mixup", "SAM", "CORAL", "InterpMix", "ExtrapMix", "GMix", "FGMix"]
ABLATION = ["ERM", "Mixup", "InterpMix", "ExtrapMix", "GMix", "FGMix"]
REPORTED_METHODS = ["IIDAccuracySelectionMethod", "OracleSelectionMethod"]
# Offline sizing: 32 images per domain and 200 steps keep the whole sweep near half an
# hour on two CPU cores (docs: README, Results).
OFFLINE_HPARAMS = '{"batch_size": 32}'



def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="./reproduce.sh",
        description="Run the FGMix experiment (offline by default) and print its tables.")
    parser.add_argument("--output_dir", default="reproduce_output",
                        help="where the sweep, tables and plots go (default: %(default)s)")
    parser.add_argument("--algorithms", nargs="+", default=ALGORITHMS)
    parser.add_argument("--datasets", nargs="+", default=None,
                        help=f"default: {' '.join(OFFLINE_DATASETS)} (offline), "
                             f"{' '.join(FULL_DATASETS)} (--full)")
    parser.add_argument("--n_hparams", type=int, default=None,
                        help="hparam draws per configuration, draw 0 being the defaults "
                             "(offline default 1: defaults only; full 20)")
    parser.add_argument("--n_trials", type=int, default=None, help="offline default 2, full 3")
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps per run (offline default 200; full: dataset default)")
    parser.add_argument("--hparams", default=None,
                        help='JSON hparam overrides for every run (offline default '
                             f'{OFFLINE_HPARAMS}; full: none)')
    parser.add_argument("--jobs", type=int, default=None,
                        help="offline: runs side by side on this machine (default: CPU count)")
    parser.add_argument("--full", action="store_true", help="the DomainBed protocol on real data")
    parser.add_argument("--data_dir", default=None, help="root of the real datasets (--full)")
    parser.add_argument("--launcher", default=None, help="command launcher for --full (e.g. slurm)")
    parser.add_argument("--report_only", action="store_true",
                        help="print the tables of what has run so far; launch nothing")
    args = parser.parse_args(argv)
    if args.full and not (args.data_dir and args.launcher):
        parser.error("--full needs --data_dir DIR and --launcher NAME "
                     "(e.g. --launcher slurm, or local)")
    return args


def sweep_arguments(args):
    """The `sweep` flags that identify this experiment's jobs (the same on every re-run)."""
    if args.full:
        flags = ["--datasets", *(args.datasets or FULL_DATASETS),
                 "--n_hparams", str(20 if args.n_hparams is None else args.n_hparams),
                 "--n_trials", str(3 if args.n_trials is None else args.n_trials),
                 "--data_dir", args.data_dir]
        if args.steps:
            flags += ["--steps", str(args.steps)]
        if args.hparams:
            flags += ["--hparams", args.hparams]
    else:
        flags = ["--datasets", *(args.datasets or OFFLINE_DATASETS),
                 "--n_hparams", str(1 if args.n_hparams is None else args.n_hparams),
                 "--n_trials", str(2 if args.n_trials is None else args.n_trials),
                 "--steps", str(args.steps or 200),
                 "--hparams", args.hparams or OFFLINE_HPARAMS,
                 # The offline datasets ship with their packages; the path is never read,
                 # but it is part of every job's hash, so it is a fixed word, not a path.
                 "--data_dir", "offline",
                 "--single_test_envs"]
    return ["--algorithms", *args.algorithms, *flags,
            "--output_dir", os.path.join(args.output_dir, "sweep")]


def run(command, env=None):
    print("$ " + " ".join(command[2:] if command[:2] == [sys.executable, "-m"] else command),
          flush=True)
    return subprocess.call(command, env=env)


def launch(args):
    env = dict(os.environ)
    launcher = args.launcher or "local"
    if not args.full:
        env["DOMAINBED_LOCAL_JOBS"] = str(args.jobs or os.cpu_count() or 1)
    rc = run([sys.executable, "-m", "domainbed.scripts.sweep", "launch", *sweep_arguments(args),
              "--command_launcher", launcher, "--skip_confirmation"], env=env)
    if rc != 0:
        raise SystemExit(f"reproduce: the sweep stopped with exit code {rc}; fix the error above "
                         f"and run the same command again (finished jobs are kept)")


# ---------------------------------------------------------------------------------------
# Reporting

def load_records(sweep_dir):
    from domainbed.lib import reporting

    return reporting.load_records(sweep_dir)


def print_tables(records):
    """collect_results' text tables, for the two selection methods this protocol supports.

    (Leave-one-domain-out needs the two-test-environment runs, which the offline sweep
    skips with --single_test_envs to halve its cost.)"""
    from domainbed import model_selection
    from domainbed.scripts import collect_results

    for name in REPORTED_METHODS:
        method = getattr(model_selection, name)
        collect_results.render_text_tables(collect_results.make_tables(records, method), latex=False)


def selected_accuracies(records):
    """{(dataset, test_env, trial): {algorithm: test accuracy}} under training-domain
    validation, one cell per trained (dataset, held-out environment, trial)."""
    from domainbed import model_selection
    from domainbed.lib import reporting

    cells = {}
    for group in reporting.scored_groups(records, model_selection.IIDAccuracySelectionMethod):
        key = (group["dataset"], group["test_env"], group["trial_seed"])
        cells.setdefault(key, {})[group["algorithm"]] = group["sweep_acc"]
    return cells


def ablation_rows(cells, chain=ABLATION):
    """Each step of the chain: mean accuracy, and the paired gain over the previous step.

    Gains are paired: the difference within the same (dataset, test env, trial) cell, then
    its mean and standard error over cells, and how many cells improved."""
    rows = []
    previous = None
    for algorithm in chain:
        present = [c for c in cells.values() if algorithm in c]
        if not present:
            continue
        row = {"algorithm": algorithm, "n": len(present),
               "mean": 100 * float(np.mean([c[algorithm] for c in present]))}
        if previous is not None:
            diffs = [100 * (c[algorithm] - c[previous]) for c in cells.values()
                     if algorithm in c and previous in c]
            if diffs:
                row["gain"] = float(np.mean(diffs))
                row["gain_se"] = float(np.std(diffs) / np.sqrt(len(diffs)))
                row["wins"] = sum(d > 0 for d in diffs)
                row["pairs"] = len(diffs)
        rows.append(row)
        previous = algorithm
    return rows


def print_ablation(rows):
    print("\n-------- Ablation (training-domain validation; gain = paired difference to the "
          "row above,\n         mean +/- standard error over (dataset, test env, trial) cells)")
    header = f"{'Algorithm':<12}{'Acc':>8}{'Gain':>10}{'+/-':>7}{'Better in':>12}"
    print(header)
    for row in rows:
        if "gain" in row:
            print(f"{row['algorithm']:<12}{row['mean']:>8.1f}{row['gain']:>+10.1f}"
                  f"{row['gain_se']:>7.1f}{row['wins']:>7}/{row['pairs']:<4}")
        else:
            print(f"{row['algorithm']:<12}{row['mean']:>8.1f}{'':>10}{'':>7}{'':>12}")


def write_plots(args):
    """Plots, and collect_results' full output (all three methods) kept beside them."""
    plot_dir = os.path.join(args.output_dir, "plots")
    log_path = os.path.join(args.output_dir, "collect_results.txt")
    with open(log_path, "w") as log:
        rc = subprocess.call(
            [sys.executable, "-m", "domainbed.scripts.collect_results",
             "--input_dir", os.path.join(args.output_dir, "sweep"), "--plot", plot_dir],
            stdout=log, stderr=subprocess.STDOUT)
    print(f"\nPlots: {plot_dir}/" if rc == 0 else f"\nPlots failed: see {log_path}")


def report(args, elapsed_s=None):
    sweep_dir = os.path.join(args.output_dir, "sweep")
    records = load_records(sweep_dir)
    print(f"\nTotal records: {len(records)}")
    print_tables(records)
    rows = ablation_rows(selected_accuracies(records))
    print_ablation(rows)
    with open(os.path.join(args.output_dir, "ablation.json"), "w") as f:
        json.dump(rows, f, indent=1)
    write_plots(args)
    if elapsed_s is not None:
        print(f"\nWall time of this invocation: {elapsed_s / 60:.1f} min")


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.output_dir, exist_ok=True)
    start = time.time()
    if args.full:
        if not args.report_only:
            launch(args)
        sys.exit(subprocess.call([sys.executable, "-m", "domainbed.scripts.collect_results",
                                  "--input_dir", os.path.join(args.output_dir, "sweep"),
                                  "--compare_upstream"]))
    if not args.report_only:
        launch(args)
    report(args, time.time() - start)


if __name__ == "__main__":
    main()
