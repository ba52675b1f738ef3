"""The linear unit tests for invariance, run through the package (`./reproduce.sh --suite iut`).

Aubin et al. (2021) built four binary problems where the answer to "did the method find
the invariant features?" is known (datasets `IUTExample2`, `IUTExample2s`, `IUTExample3`,
`IUTExample3s`, see domainbed/datasets/iut.py). This driver sweeps them as DomainBed would:

* for every number of training environments in N_ENVS, one `sweep launch` of the methods
  (random search, draw 0 = defaults; trials are independent draws of the problem) and one
  of the Oracle (ERM trained with the spurious block shuffled: hparam `iut_oracle`), all on
  the `pool` launcher (warm workers: these runs take a second, a new process three);
* training-domain validation (the training environments' holdout splits) selects each
  (problem, environments, algorithm, data seed) cell's hparams and step; the test error is
  one minus the selected test accuracy, reported as mean +/- standard error over data seeds,
  beside the published anchors (mean +/- standard deviation over 50 data seeds);
* the diagnostics of the premise (`iut_diagnostics`): where the trained linear models put
  their weight, where FGMix's learned metric puts its mass, how compatibility scores relate
  to invariant information, and which way extrapolation pushes the mixed points.

Finished jobs are reused and interrupted ones resume, so running it again continues.
"""
import argparse
import json
import os
import time

from domainbed.lib import jobdir, safe_write
from domainbed.lib.cli import OneLineErrorParser
from domainbed.results import selection
from domainbed.results.paired import paired
from domainbed.results.query import Q
from domainbed.results.records import load_sweep
from domainbed.results.tables import Column, text_header, text_row, text_table
from domainbed.studies.iut_results import (ALGORITHMS, N_ENVS, ORACLE, PROBLEMS, PUBLISHED,
                                            PUBLISHED_METHODS, error_table, problem_name)


def add_arguments(parser):
    """The suite's flags (shared with ./reproduce.sh, which passes them through)."""
    parser.add_argument("--iut_problems", nargs="+", default=PROBLEMS, metavar="DATASET")
    parser.add_argument("--iut_n_envs", nargs="+", type=int, default=N_ENVS, metavar="N")
    parser.add_argument("--iut_algorithms", nargs="+", default=ALGORITHMS, metavar="ALGORITHM")
    parser.add_argument("--iut_n_hparams", type=int, default=5,
                        help="hparam draws per cell, draw 0 = defaults (default %(default)s)")
    parser.add_argument("--iut_n_trials", type=int, default=5,
                        help="data seeds: independent draws of each problem (default %(default)s)")
    parser.add_argument("--iut_steps", type=int, default=None,
                        help="training steps (default: the datasets' N_STEPS)")
    parser.add_argument("--iut_hparams", default=None,
                        help="JSON hparams for every run, e.g. '{\"iut_n_samples\": 2000}' or "
                             "'{\"vector_featurizer\": \"mlp\"}'")


# ---------------------------------------------------------------------------------------
# Launch

def sweep_specs(args):
    """[(algorithms, hparams JSON)]: per number of environments, the methods and the Oracle."""
    extra = json.loads(args.iut_hparams) if args.iut_hparams else {}
    specs = []
    for n_envs in args.iut_n_envs:
        base = {**extra, "iut_n_envs": n_envs}
        specs.append((args.iut_algorithms, json.dumps(base, sort_keys=True)))
        specs.append((["ERM"], json.dumps({**base, "iut_oracle": True}, sort_keys=True)))
    return specs


def sweep_command(args, algorithms, hparams, command="launch"):
    """`sweep`'s arguments (run in-process by `sweep_listing.run_sweep`)."""
    command = [command, "--datasets", *args.iut_problems, "--algorithms", *algorithms,
               "--n_hparams", str(args.iut_n_hparams), "--n_trials", str(args.iut_n_trials),
               "--hparams", hparams, "--data_dir", "offline",
               # Common random numbers: the methods of a cell share its seed (paired).
               "--paired_seeds",
               "--output_dir", os.path.join(args.output_dir, "sweep")]
    if args.iut_steps:
        command += ["--steps", str(args.iut_steps)]
    if command[0] == "launch":
        command += ["--command_launcher", "pool", "--skip_confirmation"]
    return command


def launch(args, env=None):
    """Every sweep of the suite; their per-job lines go to OUTPUT_DIR/sweep_jobs.txt."""
    from domainbed.studies import sweep_listing

    listing = sweep_listing.start_listing(os.path.join(args.output_dir, "sweep_jobs.txt"))
    for algorithms, hparams in sweep_specs(args):
        print("$ sweep launch --datasets " + " ".join(args.iut_problems) + " --algorithms "
              + " ".join(algorithms) + f" --hparams '{hparams}' ...", flush=True)
        rc = sweep_listing.run_sweep(sweep_command(args, algorithms, hparams), listing, env=env)
        if rc != 0:
            raise sweep_listing.SweepStopped(
                f"iut suite: the sweep stopped with exit code {rc}; fix the error above and "
                f"run the same command again (finished jobs are kept)")


# ---------------------------------------------------------------------------------------
# Tables

def load_records(sweep_dir):
    """The sweep's records, the Oracle's renamed to 'Oracle' (they are ERM runs)."""
    renamed = []
    for record in load_sweep(sweep_dir).records:
        if record["hparams"].get("iut_oracle"):
            record = {**record, "args": {**record["args"], "algorithm": ORACLE}}
        renamed.append(record)
    return Q(renamed)


def selected_cells(sweep_records):
    """{(n_envs, problem, algorithm): [(trial_seed, test error, selected records)]} under
    training-domain validation."""
    cells = {}
    for choice in selection.selected_runs(sweep_records, selection.IIDAccuracySelectionMethod):
        key = (choice["test_env"], problem_name(choice["dataset"]), choice["algorithm"])
        cells.setdefault(key, []).append(
            (choice["trial_seed"], 1.0 - choice["run_acc"]["test_acc"], choice["records"]))
    return cells


def column_order(table):
    present = {algorithm for row in table.values() for algorithm in row}
    order = ALGORITHMS + [ORACLE]
    return [a for a in order if a in present] + sorted(present - set(order))


def format_error_table(table):
    """Ours (mean +/- s.e. over data seeds) with the published row (mean +/- std) below."""
    algorithms = column_order(table)
    labels = [Column("envs", 5, "<"), Column("problem", 11, "<"), Column("", 10, "<")]
    ours = labels + [Column(a, 12, fmt="{:.2f}+/-{:.2f}", missing="-") for a in algorithms]
    anchors = labels + [Column(a, 12, fmt="{:.2f}+/-{:.2f}") for a in algorithms]
    lines = ["-------- Invariance unit tests: test error (lower is better; chance 0.50)",
             "ours: mean +/- standard error over data seeds (n in brackets), training-domain "
             "validation;", "published: mean +/- standard deviation over 50 data seeds "
             "(Aubin et al. 2021)", text_header(ours)]
    for (n_envs, problem), row in table.items():
        n = max(summary["n"] for summary in row.values())
        lines.append(text_row(ours, [n_envs, problem, f"ours ({n})"] + [
            (row[a]["mean"], row[a]["se"]) if a in row else None for a in algorithms]))
        published = PUBLISHED.get((n_envs, problem))
        if published:
            by_method = dict(zip(PUBLISHED_METHODS, published))
            lines.append(text_row(anchors, ["", "", "published"]
                                  + [by_method.get(a) for a in algorithms]))
    return "\n".join(lines)


def paired_differences(cells, reference="ERM"):
    """{algorithm: summary of (its error - reference's) over (n_envs, problem, seed) cells}
    and the count of cells where it is lower."""
    by_cell = {}
    for (n_envs, problem, algorithm), entries in cells.items():
        for seed, error, _ in entries:
            by_cell.setdefault((n_envs, problem, seed), {})[algorithm] = error
    algorithms = dict.fromkeys(algorithm for errors in by_cell.values() if reference in errors
                               for algorithm in errors if algorithm != reference)
    differences = {}
    for algorithm in algorithms:
        result = paired(by_cell, algorithm, reference, higher_is_better=False)
        differences[algorithm] = {"mean": result.mean, "se": result.se, "std": result.std,
                                  "n": result.n, "lower": result.wins}
    return differences


PAIRED_COLUMNS = [Column("algorithm", 12, "<"), Column("mean", 8, fmt="{:+.3f}"),
                  Column("s.e.", 7, fmt="{:.3f}"), Column("lower in", 12, fmt="{:>7}/{:<4}")]


def format_paired(paired, reference="ERM"):
    title = (f"-------- Paired difference in test error to {reference} over every (envs, "
             "problem, data seed) cell (negative = better)")
    return "\n".join([title] + text_table(PAIRED_COLUMNS, [
        (algorithm, s["mean"], s["se"], (s["lower"], s["n"]))
        for algorithm, s in ((a, paired[a]) for a in ALGORITHMS + [ORACLE] if a in paired)]))


# ---------------------------------------------------------------------------------------
# Main

def report(args):
    sweep_dir = os.path.join(args.output_dir, "sweep")
    records = load_records(sweep_dir)
    cells = selected_cells(records)
    table = error_table(cells)
    paired = paired_differences(cells)
    print(f"\nInvariance unit tests: {len(records)} records")
    print(format_error_table(table))
    print()
    print(format_paired(paired))
    summary = {"errors": {f"{n}/{p}": row for (n, p), row in table.items()},
               "paired_to_ERM": paired}
    from domainbed.studies import iut_diagnostics

    diagnostics = iut_diagnostics.run(cells, args.output_dir)
    summary["diagnostics"] = diagnostics
    with safe_write.open_file(os.path.join(args.output_dir, "iut_summary.json"), "w") as f:
        json.dump(summary, f, indent=1, sort_keys=True)
    print(f"\nSummary: {os.path.join(args.output_dir, 'iut_summary.json')}")
    return summary


def parse_args(argv=None):
    parser = OneLineErrorParser(
        prog="python -m domainbed.scripts.iut_suite", description=__doc__.split("\n")[0])
    parser.add_argument("--output_dir", default=os.path.join("reproduce_output", "iut"))
    parser.add_argument("--report_only", action="store_true")
    add_arguments(parser)
    args = parser.parse_args(argv)
    problem = jobdir.output_dir_problem(args.output_dir, "iut_suite",
                                        ("sweep", "iut_summary.json"), ("sweep",))
    if problem:   # ours only by content (a marker, a sweep of ours), never by a name
        parser.error(problem)
    if args.report_only and not os.path.isdir(os.path.join(args.output_dir, "sweep")):
        parser.error(f"--report_only: nothing has run yet in {args.output_dir}; run the same "
                     "command without --report_only first")
    return args


def main(argv=None, args=None):
    args = args or parse_args(argv)
    safe_write.claim_directory(args.output_dir, "iut_suite")
    start = time.time()
    if not args.report_only:
        launch(args)
    summary = report(args)
    print(f"Wall time of the unit-test suite: {(time.time() - start) / 60:.1f} min")
    return summary


if __name__ == "__main__":
    main()
