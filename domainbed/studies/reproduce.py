"""The main job behind `./reproduce.sh`: DomainBed's protocol in miniature, offline, on CPU.

Offline (default), two suites, each a set of ordinary sweeps whose job directories are
reused on a re-run (interrupted jobs resume):

* `digits`: the ablation chain ERM -> Mixup -> InterpMix -> ExtrapMix -> GMix -> FGMix on
  the offline digit datasets, every environment held out in turn, random search (draw 0 =
  defaults, upstream's per-name seeded draws), several trials, steps to convergence
  (docs/studies.md), run by the `pool` launcher (warm workers). Then collect_results'
  training-domain-validation and oracle tables, the paired ablation (gains, spreads, win
  counts and the smallest difference the sweep can detect) and the plots.
* `iut`: the linear unit tests for invariance with the published anchors beside ours and
  the diagnostics of FGMix's premise (`domainbed.scripts.iut_suite`).

`--preset quick | default | large` sizes both (costs printed at start; measured on two
CPU cores, see README). Any sizing flag given explicitly overrides the preset.

--full: the DomainBed protocol (all test-environment combinations, 20 hparam draws, 3 trials)
on the real datasets through a launcher, then `collect_results --compare_upstream`.

This module launches the public `sweep` command, reads records and builds its tables
in-process through `domainbed.results`, and for --full hands over to
`collect_results --compare_upstream`; it imports no torch itself (the iut diagnostics do).
"""
import argparse
import contextlib
import json
import os
import subprocess
import sys
import time

import numpy as np

from domainbed import results, settings
from domainbed.lib import jobdir, safe_write, validation
from domainbed.lib.cli import OneLineErrorParser
from domainbed.results import selection
from domainbed.results.paired import paired
from domainbed.results.plots import MatplotlibMissing
from domainbed.results.tables import Column, text_header, text_row, text_table
from domainbed.studies import iut_suite, mechanisms, sweep_listing

FULL_DATASETS = ["ColoredMNIST", "RotatedMNIST", "VLCS", "PACS", "OfficeHome",
                 "TerraIncognita", "DomainNet"]
# Version 1's chain (ERM -> ... -> FGMixV1), then version 2's and version 3's with their
# controls (docs/method.md): each row is paired with the row above it, or with the row it
# extends (EXTENDS).
VERSION1_ROWS = ["InterpMix", "ExtrapMix", "GMix", "FGMixV1"]
ABLATION = ["ERM", "Mixup", "SAM", *VERSION1_ROWS, "ExtrapMix2", "GMix2", "FGMixV2",
            "ExtrapMix2M", "ShuffleMix3", "AntiGMix3", "GMix3", "FGMix3", "FGMix3LOO", "FGMix"]
EXTENDS = {"InterpMix": "ERM", "SAM": "ERM",
           "ExtrapMix2": "ExtrapMix",   # extrapolation by design, random direction
           "GMix2": "ExtrapMix2",       # the direction from compatibilities, same rule
           "FGMixV2": "GMix2",          # the learned, flatness-aware policy (version 2)
           "ExtrapMix2M": "ExtrapMix2",  # version 3's difficulty-matched control
           "ShuffleMix3": "ExtrapMix2M",
           "AntiGMix3": "ShuffleMix3",
           "GMix3": "ShuffleMix3",      # the compatibilities decide how far (version 3)
           "FGMix3": "GMix3", "FGMix3LOO": "GMix3", "FGMix": "ExtrapMix2"}
ALGORITHMS = ABLATION
# The paired comparisons the evaluation was registered for (docs/method.md, version 3):
# (algorithm, reference, the question its paired difference answers).
COMPARISONS = [
    ("FGMix", "ExtrapMix2", "the method vs random-direction extrapolation (aim: >= +1)"),
    ("FGMix", "ERM", "the method vs ERM"),
    ("GMix3", "ShuffleMix3", "information: the same amounts, linked to compatibilities or not"),
    ("GMix3", "AntiGMix3", "the compatibility's sign"),
    ("GMix3", "ExtrapMix2M", "per-group amounts vs one κ at matched difficulty"),
    ("FGMix", "GMix3", "the learned, flatness-aware metric (version 3)"),
    ("GMix2", "ExtrapMix2", "compatibility vs random direction (version 2)"),
    ("FGMixV2", "GMix2", "the learned metric (version 2)"),
    ("ExtrapMix2", "ERM", "extrapolating mixed images"),
    ("ExtrapMix2M", "ExtrapMix2", "a stronger κ"),
    ("Mixup", "ERM", "upstream's Mixup"),
    ("SAM", "ERM", "flat minima by SAM"),
]
# The default preset answers version 3's pre-registered question (docs/method.md): the
# version-1 rows, whose question is settled, run in the large preset and with --algorithms.
# Version 2's GMix2 and FGMixV2 (measured paired on RotatedMNIST5k before) and the look-ahead
# not chosen also run in the large preset; the default stays within 45 minutes.
DEFAULT_ROWS = ["ERM", "Mixup", "SAM", "ExtrapMix2", "ExtrapMix2M", "ShuffleMix3", "AntiGMix3",
                "GMix3", "FGMix"]
DEFAULT_IUT_METHODS = ["ERM", "IRM", "ANDMask", "ExtrapMix2", "ShuffleMix3", "GMix3", "FGMix"]
REPORTED_METHODS = ["IIDAccuracySelectionMethod", "OracleSelectionMethod"]
SUITES = ("digits", "iut")

# Sizing of each preset. steps None = the datasets' N_STEPS (1001 for the offline digit
# datasets, where validation accuracy has reached its plateau; 401 for the unit tests).
PRESETS = {
    "quick": {
        # A plumbing check of both suites, sized to stay within 5 minutes on 2 cores: ERM and
        # version 3's chain, the default's unit-test methods, one draw, short runs. (The
        # default's 7 rows took 5.8 minutes on a busy machine, 2026-12-07.)
        "cost": "4.3 minutes measured in a fresh clone on 2 busy CPU cores (runs 3.0, "
                "tables, diagnostics and plots 1.3; 2026-12-07), after the one-time set-up "
                "(about 3.5 minutes); a plumbing check, not an experiment",
        "runs": "RotatedMNIST5k: 4 algorithms x 6 held-out environments, 1 draw, 1 trial, "
                "200 steps (24 runs); unit tests: 3 environments, 6 methods + the Oracle, "
                "1 draw, 2 data seeds, 101 steps (56 runs)",
        "datasets": ["RotatedMNIST5k"], "algorithms": ["ERM", "ExtrapMix2", "GMix3", "FGMix"],
        "n_hparams": 1, "n_trials": 1, "steps": 200,
        "iut": {"iut_n_envs": [3], "iut_n_hparams": 1, "iut_n_trials": 2, "iut_steps": 101,
                "iut_algorithms": [a for a in DEFAULT_IUT_METHODS if a != "ShuffleMix3"]},
    },
    "default": {
        "cost": "about 30 minutes on 2 CPU cores (27.5 measured in a fresh clone on "
                "2026-12-07, set-up included; README, Results); --suite iut alone: every method of "
                "the unit-test suite at 5 draws x 5 seeds, about 40-60 minutes (estimated)",
        # Paired seeds, the pre-registered defaults (draw 0), every held-out environment of
        # the two evaluation datasets (DigitsDG5k is the tuning split: never run here).
        "datasets": ["RotatedMNIST5k", "ColoredMNIST5k"], "algorithms": DEFAULT_ROWS,
        "n_hparams": 1, "n_trials": 3, "steps": None,
        # Both suites together fit the main job's budget with 3 draws x 3 data seeds of the
        # unit tests and the methods that carry its conclusions; `--suite iut` alone runs
        # them all at the suite's own size (5 x 5) into the same directory, so it only adds
        # the runs the default did not make.
        "iut": {"iut_n_envs": [3], "iut_n_hparams": 3, "iut_n_trials": 3,
                "iut_algorithms": DEFAULT_IUT_METHODS},
        "iut_alone": {},
    },
    "large": {
        "cost": "about 12 hours on 2 CPU cores (of which about 2 for the two SWAD rows)",
        "datasets": ["RotatedMNIST5k", "ColoredMNIST5k", "DigitsDG5k"],
        "algorithms": ABLATION + ["CORAL", "ERM+SWAD", "FGMix+SWAD"],
        "n_hparams": 10, "n_trials": 5, "steps": 2001,
        "iut": {"iut_n_hparams": 10, "iut_n_trials": 10, "iut_steps": 1001},
    },
}
OFFLINE_DATASETS = PRESETS["default"]["datasets"]


def parse_args(argv=None):
    parser = OneLineErrorParser(
        prog="./reproduce.sh", hint="see --help",
        description="Run the FGMix experiment (offline by default) and print its tables.")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default",
                        help="sizing of the offline experiment (default: %(default)s)")
    parser.add_argument("--suite", choices=("all",) + SUITES, default="all",
                        help="offline: both suites (default), or only one")
    parser.add_argument("--output_dir", default=None,
                        help="where the sweeps, tables and plots go (default: "
                             "reproduce_output/PRESET, or reproduce_output/full)")
    parser.add_argument("--algorithms", nargs="+", default=None,
                        help="digits suite (default: the preset's)")
    parser.add_argument("--datasets", nargs="+", default=None,
                        help=f"default: the preset's (offline), {' '.join(FULL_DATASETS)} (--full)")
    parser.add_argument("--n_hparams", type=int, default=None,
                        help="hparam draws per configuration, draw 0 being the defaults")
    parser.add_argument("--n_trials", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps per run (default: the preset's, else the dataset's)")
    parser.add_argument("--hparams", default=None, help="JSON hparam overrides for every run")
    parser.add_argument("--jobs", type=int, default=None,
                        help="offline: warm worker processes (default: CPU count)")
    parser.add_argument("--full", action="store_true", help="the DomainBed protocol on real data")
    parser.add_argument("--data_dir", default=None, help="root of the real datasets (--full)")
    parser.add_argument("--launcher", default=None, help="command launcher for --full (e.g. slurm)")
    parser.add_argument("--report_only", action="store_true",
                        help="print the tables of what has run so far; launch nothing")
    iut_suite.add_arguments(parser)
    describe_preset_defaults(parser)
    args = parser.parse_args(argv)
    if args.full and not (args.data_dir and args.launcher):
        parser.error("--full needs --data_dir DIR and --launcher NAME "
                     "(e.g. --launcher slurm, or local)")
    try:
        check_numbers(args)
    except validation.ValidationError as error:
        parser.error(str(error))
    apply_preset(args, argv if argv is not None else sys.argv[1:])
    check_output_dir(parser, args)
    return args


IUT_SIZING = ("iut_n_envs", "iut_algorithms", "iut_n_hparams", "iut_n_trials", "iut_steps")
IUT_FLAG_TEXT = {"iut_n_envs": "unit tests: numbers of training environments",
                 "iut_algorithms": "unit tests: methods (the Oracle is added)"}


def describe_preset_defaults(parser):
    """--help gives the unit-test sizes each preset runs, read from PRESETS (the suite's
    own defaults apply only where a preset leaves a flag to it, e.g. --suite iut alone)."""
    for action in parser._actions:
        if action.dest not in IUT_SIZING:
            continue
        suite_default = _shown(action.dest, action.default)
        sizes = {name: PRESETS[name]["iut"].get(action.dest, action.default) for name in PRESETS}
        runs = "; ".join(f"{name}: {_shown(action.dest, size)}" for name, size in sizes.items())
        what = (action.help or IUT_FLAG_TEXT.get(action.dest, "")).split(" (default")[0]
        action.help = (f"{what}. Default: the preset's ({runs}); with --suite iut alone "
                       f"the default preset runs the suite's own: {suite_default}")


def _shown(flag, value):
    if value is None:
        return "the datasets' N_STEPS (401)" if flag == "iut_steps" else "all"
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value) if len(value) <= 6 else f"all {len(value)}"
    return str(value)


def check_numbers(args):
    """The sizing flags given (None: the preset's), through the one validation layer."""
    for flag in ("n_hparams", "n_trials", "iut_n_hparams", "iut_n_trials"):
        if getattr(args, flag) is not None:
            validation.check_count(f"--{flag}", getattr(args, flag), 1, validation.MAX_DRAWS)
    for flag in ("steps", "iut_steps"):
        if getattr(args, flag) is not None:
            validation.check_count(f"--{flag}", getattr(args, flag), 0, validation.MAX_STEPS,
                                   zero_means="the preset's or the dataset's default")
    if args.jobs is not None:
        validation.check_count("--jobs", args.jobs, 1, 1024)
    for n_envs in args.iut_n_envs or ():
        validation.check_count("--iut_n_envs", n_envs, 2, 1024)
    validation.check_distinct("--iut_n_envs", args.iut_n_envs or ())


# What reproduce writes into its --output_dir; a folder that holds one of these without a
# sweep of ours (`sweep/` or `iut/`, a directory) is somebody else's.
OUTPUT_NAMES = ("sweep", "iut", "ablation.json", "collect_results.txt", "plots")


def check_output_dir(parser, args):
    """Refuse a file as --output_dir, and a folder with files we would write but no run of
    ours in it: nothing is written there."""
    out = args.output_dir
    problem = jobdir.output_dir_problem(out, "reproduce", OUTPUT_NAMES,
                                        ("sweep", os.path.join("iut", "sweep")))
    if problem:   # ours only by content (a marker, a sweep of ours), never by a name
        parser.error(problem)
    if args.report_only:
        needed = [os.path.join(out, "sweep")] * (args.full or args.suite != "iut") + \
                 [os.path.join(out, "iut", "sweep")] * (not args.full and args.suite != "digits")
        missing = [path for path in needed if not os.path.isdir(path)]
        if missing:
            parser.error(f"--report_only: nothing has run yet ({missing[0]} does not exist); "
                         "run the same command without --report_only first")


def apply_preset(args, argv):
    """Fill every sizing flag the user did not give from the preset."""
    preset = PRESETS[args.preset]
    if args.output_dir is None:  # presets never share a sweep: their tables would mix
        args.output_dir = os.path.join("reproduce_output", "full" if args.full else args.preset)
    given = {word.split("=")[0] for word in argv if word.startswith("--")}
    for name in ("datasets", "algorithms", "n_hparams", "n_trials", "steps"):
        if f"--{name}" not in given and not args.full:
            setattr(args, name, preset[name])
    if args.algorithms is None:
        args.algorithms = ALGORITHMS
    iut_sizing = preset.get("iut_alone", preset["iut"]) if args.suite == "iut" else preset["iut"]
    for name, value in iut_sizing.items():
        if f"--{name}" not in given:
            setattr(args, name, value)


def sweep_arguments(args):
    """The `sweep` flags that identify this experiment's jobs (the same on every re-run)."""
    if args.full:
        flags = ["--datasets", *(args.datasets or FULL_DATASETS),
                 "--n_hparams", str(20 if args.n_hparams is None else args.n_hparams),
                 "--n_trials", str(3 if args.n_trials is None else args.n_trials),
                 "--data_dir", args.data_dir]
    else:
        flags = ["--datasets", *args.datasets,
                 "--n_hparams", str(args.n_hparams), "--n_trials", str(args.n_trials),
                 # The offline datasets ship with their packages; the path is never read,
                 # but it is part of every job's hash, so it is a fixed word, not a path.
                 "--data_dir", "offline",
                 "--single_test_envs",
                 # Common random numbers: every algorithm of a cell gets the same seed.
                 "--paired_seeds"]
    if args.steps:
        flags += ["--steps", str(args.steps)]
    if args.hparams:
        flags += ["--hparams", args.hparams]
    return ["--algorithms", *args.algorithms, *flags,
            "--output_dir", os.path.join(args.output_dir, "sweep")]


def worker_env(args):
    """The variables the sweep runs with (in this process): `--jobs` pool workers."""
    return {settings.POOL_WORKERS: str(args.jobs)} if args.jobs else {}


def launch(args):
    """The digit suite's sweep, through the sweep library in this process (the command's
    own code; its jobs run in the launcher's processes); per-job lines into
    OUTPUT_DIR/sweep_jobs.txt."""
    launcher = args.launcher or "pool"
    listing = sweep_listing.start_listing(os.path.join(args.output_dir, "sweep_jobs.txt"))
    argv = ["launch", *sweep_arguments(args), "--command_launcher", launcher,
            "--skip_confirmation"]
    print("$ domainbed.scripts.sweep " + " ".join(argv), flush=True)
    rc = sweep_listing.run_sweep(argv, listing, env=worker_env(args))
    if rc != 0:
        raise sweep_listing.SweepStopped(
            f"reproduce: the sweep stopped with exit code {rc}; fix the error above and run "
            f"the same command again (finished jobs are kept)")


# ---------------------------------------------------------------------------------------
# Reporting

def load_records(sweep_dir):
    return results.records.load_records(sweep_dir)


def print_tables(records):
    """collect_results' text tables, for the two selection methods this protocol supports.

    (Leave-one-domain-out needs the two-test-environment runs, which the offline sweep
    skips with --single_test_envs to halve its cost.)"""
    tables = results.build(records, [getattr(selection, name) for name in REPORTED_METHODS])
    for method in tables.methods:
        results.tables.print_text_tables(tables.tables[method.name])


def gain(cells, algorithm, reference):
    """The paired gain of `algorithm` over `reference` in points, within each (dataset,
    test env, trial) cell having both: {gain, gain_se, wins, pairs}, or None without such
    a cell."""
    result = paired(cells, algorithm, reference, scale=100)
    if result is None:
        return None
    return {"gain": result.mean, "gain_se": result.se, "wins": result.wins, "pairs": result.n}


# FGMixV1's defaults were checked (and kept) on this (dataset, test env): docs/method.md.
# (Version 2's were chosen on DigitsDG5k, which the default preset does not run.)
TUNING_SPLIT = ("RotatedMNIST5k", 0)

# A paired difference of 2.8 standard errors is detected with 80% power by a two-sided
# test at the 5% level (1.96 + 0.84, normal approximation).
DETECTABLE_SE = 2.8


# A row whose cells lack the chain's first algorithm: no gain over it.
NO_GAIN = {"gain": float("nan"), "gain_se": float("nan"), "wins": 0, "pairs": 0}


def ablation_rows(cells, chain=ABLATION, extends=None):
    """Each step of the chain: mean accuracy, the paired gain over the step it extends
    (`extends[algorithm]` when that row ran, else the previous row that ran) and over ERM
    (the chain's first row).

    Gains are paired: the difference within the same (dataset, test env, trial) cell, then
    its mean and standard error over cells, and how many cells improved."""
    extends = EXTENDS if extends is None else extends
    rows = []
    previous = None
    for algorithm in chain:
        present = [c for c in cells.values() if algorithm in c]
        if not present:
            continue
        row = {"algorithm": algorithm, "n": len(present),
               "mean": 100 * float(np.mean([c[algorithm] for c in present]))}
        ran = {r["algorithm"] for r in rows}
        base = extends.get(algorithm) if extends.get(algorithm) in ran else previous
        if base is not None:
            over = gain(cells, algorithm, base)
            if over:
                row["over"] = base
                row.update(over)
                to_first = gain(cells, algorithm, rows[0]["algorithm"]) or NO_GAIN
                row["vs_first"], row["vs_first_se"] = to_first["gain"], to_first["gain_se"]
                row["vs_first_wins"] = to_first["wins"]
        rows.append(row)
        previous = algorithm
    return rows


def smallest_detectable(rows):
    """The paired difference (points) the sweep detects at 80% power: 2.8 median s.e."""
    errors = [row["gain_se"] for row in rows if row.get("gain_se") == row.get("gain_se")
              and "gain_se" in row]
    return DETECTABLE_SE * float(np.median(errors)) if errors else None


def ablation_columns(first):
    """The ablation table's columns; `first`: the chain's first row (vs_first's reference)."""
    return [Column("Algorithm", 12, "<"), Column("Acc", 8, fmt="{:.1f}"), Column("over", 12),
            Column("Gain", 8, fmt="{:+.1f}"), Column("+/-", 7, fmt="{:.1f}"),
            Column("Better in", 12, fmt="{:>7}/{:<4}"), Column("vs " + first, 10, fmt="{:+.1f}"),
            Column("+/-", 7, fmt="{:.1f}"), Column("Better in", 12, fmt="{:>7}/{:<4}")]


def print_ablation(rows):
    first = rows[0]["algorithm"] if rows else "ERM"
    print("\n-------- Ablation (training-domain validation; gain = paired difference to the "
          "row it extends (over),\n         mean +/- standard error over (dataset, test env, "
          "trial) cells)")
    lines = text_table(ablation_columns(first), [
        (row["algorithm"], row["mean"], row["over"], row["gain"], row["gain_se"],
         (row["wins"], row["pairs"]), row["vs_first"], row["vs_first_se"],
         (row["vs_first_wins"], row["pairs"])) if "gain" in row
        else (row["algorithm"], row["mean"]) for row in rows])
    for line in lines:
        print(line)
    detectable = smallest_detectable(rows)
    if detectable is not None:
        print(f"Smallest paired difference this sweep detects (80% power, 5% two-sided): "
              f"{detectable:.1f} points ({DETECTABLE_SE} x the median standard error)")


def comparison_rows(cells, comparisons=COMPARISONS):
    """Each pre-registered comparison that ran: its paired difference per dataset and over
    all cells ({"dataset": summary}), in points."""
    datasets = sorted({key[0] for key in cells})
    rows = []
    for algorithm, reference, question in comparisons:
        by_dataset = {}
        for dataset in datasets + ["all"]:
            mine = {k: c for k, c in cells.items() if dataset in ("all", k[0])}
            result = gain(mine, algorithm, reference)
            if result:
                by_dataset[dataset] = result
        if by_dataset:
            rows.append({"algorithm": algorithm, "reference": reference, "question": question,
                         "by_dataset": by_dataset})
    return rows


def print_comparisons(rows):
    if not rows:
        return
    datasets = list(rows[0]["by_dataset"])
    columns = ([Column("comparison", 26, "<")]
               + [Column(dataset, 24, fmt="{:>+9.2f} +/- {:<5.2f}{:>3}/{:<3}", missing="-")
                  for dataset in datasets]
               + [Column("question", align="<", before="  ")])
    print("\n-------- Paired comparisons (training-domain validation; mean +/- standard error "
          "over cells,\n         cells where the first is better)")
    lines = text_table(columns, [
        [row["algorithm"] + " - " + row["reference"]]
        + [None if s is None else (s["gain"], s["gain_se"], s["wins"], s["pairs"])
           for s in (row["by_dataset"].get(dataset) for dataset in datasets)]
        + [row["question"]] for row in rows])
    for line in lines:
        print(line)


def write_plots(args, records):
    """collect_results' bar charts and text tables (all three methods, in
    collect_results.txt), and the learning curves of the default-hparams runs."""
    from domainbed.results import plots

    plot_dir = os.path.join(args.output_dir, "plots")
    tables = results.build(records)
    with safe_write.open_file(os.path.join(args.output_dir, "collect_results.txt"), "w") as log:
        with contextlib.redirect_stdout(log):
            results.tables.render(tables, "text")
    notes = []   # tables without a value get a note, not an empty chart
    try:
        bars = plots.plot_tables(tables.all_tables(), plot_dir, notes)
        paths = plot_learning_curves(records, plot_dir)
    except MatplotlibMissing as error:
        print(f"\nPlots skipped: {error}")
        return
    print(f"\nPlots: {plot_dir}/ ({len(bars)} charts of the tables, {len(paths)} learning-curve "
          f"figures)" + "".join(f"\n  {note}" for note in notes))


def learning_curves(records):
    """{dataset: {algorithm: (steps, mean val acc, mean test acc)}} over the default-hparams
    runs: validation = mean of the training envs' out-splits (what selection reads)."""
    by_step = {}
    for (dataset, algorithm, _, _), steps in default_runs(records).items():
        for step, accs in steps.items():
            by_step.setdefault(dataset, {}).setdefault(algorithm, {}).setdefault(step, []).append(accs)
    return {dataset: {algorithm: (sorted(steps),
                                  [float(np.mean([v for v, _ in steps[s]])) for s in sorted(steps)],
                                  [float(np.mean([t for _, t in steps[s]])) for s in sorted(steps)])
                      for algorithm, steps in algorithms.items()}
            for dataset, algorithms in by_step.items()}


def default_runs(records):
    """{(dataset, algorithm, test env, trial): {step: (val acc, test acc)}} of the
    default-hparams runs (hparams_seed 0), one test env each."""
    runs = {}
    for record in records:
        args = record["args"]
        if args["hparams_seed"] != 0 or len(args["test_envs"]) != 1:
            continue
        accs = selection.IIDAccuracySelectionMethod._step_acc(record)
        key = (args["dataset"], args["algorithm"], args["test_envs"][0], args["trial_seed"])
        runs.setdefault(key, {})[record["step"]] = (accs["val_acc"], accs["test_acc"])
    return runs


def print_learning_curves(records, reference="ERM"):
    """Validation accuracy by step (is training converged?) and the paired test-accuracy
    gap to `reference` by step, over the default-hparams runs."""
    runs = default_runs(records)
    for dataset in sorted({key[0] for key in runs}):
        last = max(max(runs[key]) for key in runs if key[0] == dataset)
        keys = [key for key in runs if key[0] == dataset and max(runs[key]) == last]  # finished
        steps = sorted(set.intersection(*(set(runs[key]) for key in keys)) - {0})
        shown = [steps[i] for i in sorted({round(j * (len(steps) - 1) / 9) for j in range(10)})]
        print(f"\n-------- Learning curves, {dataset} (default hparams, finished runs; val = "
              f"training-domain validation accuracy,\n         gap = paired test-accuracy "
              f"difference to {reference}, both in points)")
        labels = [Column("Algorithm", 11, "<"), Column("runs", 5), Column("", 5, "<")]
        val_columns = labels + [Column(str(step), 7, fmt="{:.1f}") for step in shown]
        gap_columns = labels + [Column(str(step), 7, fmt="{:+.1f}") for step in shown]
        print(text_header(val_columns))
        for algorithm in [a for a in ALGORITHMS if any(k[1] == a for k in keys)] + sorted(
                {k[1] for k in keys} - set(ALGORITHMS)):
            mine = [key for key in keys if key[1] == algorithm]
            val = [100 * np.mean([runs[key][step][0] for key in mine]) for step in shown]
            print(text_row(val_columns, [algorithm, len(mine), "  val", *val]))
            pairs = [key for key in mine if (dataset, reference, *key[2:]) in keys]
            if algorithm != reference and pairs:
                gap = [100 * np.mean([runs[key][step][1] - runs[(dataset, reference, *key[2:])][step][1]
                                      for key in pairs]) for step in shown]
                print(text_row(gap_columns, ["", len(pairs), "  gap", *gap]))


def plot_learning_curves(records, plot_dir):
    from domainbed.results import plots

    plt = plots.require_matplotlib()
    os.makedirs(plot_dir, exist_ok=True)
    paths = []
    for dataset, algorithms in sorted(learning_curves(records).items()):
        figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
        order = [a for a in ALGORITHMS if a in algorithms] + sorted(set(algorithms) - set(ALGORITHMS))
        for i, algorithm in enumerate(order):
            steps, val, test = algorithms[algorithm]
            style = dict(label=algorithm, markersize=3, linewidth=1.2, **plots.series_style(i))
            left.plot(steps, [100 * v for v in val], **style)
            right.plot(steps, [100 * t for t in test], **style)
        left.set_title(f"{dataset}: training-domain validation")
        right.set_title(f"{dataset}: held-out environment (in-split)")
        for axis in (left, right):
            axis.set_xlabel("step")
            axis.set_ylabel("accuracy (%), default hparams")
            axis.grid(linewidth=0.3)
        figure.tight_layout()
        plots.legend_outside(right)
        paths.append(plots.save_figure(
            figure, os.path.join(plot_dir, f"{dataset}_learning_curves.png")))
    return paths


def report(args):
    sweep_dir = os.path.join(args.output_dir, "sweep")
    records = load_records(sweep_dir)
    print(f"\nTotal records: {len(records)}")
    print_tables(records)
    cells = selection.selected_accuracies(records)
    rows = ablation_rows(cells)
    print_ablation(rows)
    held_out = {key: c for key, c in cells.items() if key[:2] != TUNING_SPLIT}
    untuned = gain(held_out, "FGMixV1", "ERM")
    if untuned and untuned["pairs"] > 1 and len(held_out) < len(cells):
        print(f"Without {TUNING_SPLIT[0]} test env {TUNING_SPLIT[1]} (where FGMixV1's "
              f"defaults were checked): FGMixV1 - ERM = {untuned['gain']:+.1f} +/- "
              f"{untuned['gain_se']:.1f} points, better in {untuned['wins']}/{untuned['pairs']} "
              "cells")
    comparisons = comparison_rows(cells)
    print_comparisons(comparisons)
    print(mechanisms.format_mechanisms(mechanisms.mechanism_rows(records, ABLATION)))
    print_learning_curves(records)
    with safe_write.open_file(os.path.join(args.output_dir, "ablation.json"), "w") as f:
        json.dump({"rows": rows, "smallest_detectable_points": smallest_detectable(rows),
                   "comparisons": comparisons}, f, indent=1)
    write_plots(args, records)


def iut_args(args):
    """The unit-test suite's namespace: the same flags, its own output directory."""
    namespace = argparse.Namespace(**vars(args))
    namespace.output_dir = os.path.join(args.output_dir, "iut")
    return namespace


def main(argv=None):
    args = parse_args(argv)
    safe_write.claim_directory(args.output_dir, "reproduce")
    start = time.time()
    if args.full:
        if not args.report_only:
            launch(args)
        return subprocess.call([sys.executable, "-m", "domainbed.scripts.collect_results",
                                "--input_dir", os.path.join(args.output_dir, "sweep"),
                                "--compare_upstream"])
    suites = SUITES if args.suite == "all" else (args.suite,)
    print(f"reproduce: preset {args.preset!r} ({PRESETS[args.preset]['cost']}); "
          f"suites: {', '.join(suites)}", flush=True)
    if "runs" in PRESETS[args.preset]:
        print(f"reproduce: it runs {PRESETS[args.preset]['runs']}", flush=True)
    if not args.report_only:
        if "digits" in suites:
            launch(args)
        if "iut" in suites:
            os.makedirs(iut_args(args).output_dir, exist_ok=True)
            iut_suite.launch(iut_args(args), env=worker_env(args))
    if "digits" in suites:
        report(args)
    if "iut" in suites:
        iut_suite.report(iut_args(args))
    print(f"\nWall time of this invocation: {(time.time() - start) / 60:.1f} min")


if __name__ == "__main__":
    main()
