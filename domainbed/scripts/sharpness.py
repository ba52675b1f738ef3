"""Flatness of trained models: the ρ-ball loss increase and the top Hessian eigenvalue.

    python -m domainbed.scripts.sharpness SWEEP_DIR_OR_JOB_DIR [...] [--output sharpness.jsonl]

Each finished job directory (or every one in a sweep directory) is measured at its final
model (or `--model selected`: model_iid.pkl) on fixed batches of its training data; one
line per job, then the mean ± standard error per algorithm. `--plot DIR` adds the loss
along random filter-normalised directions, one figure per dataset (and a 2-D slice with
`--slice`). Library: `domainbed.sharpness`, `domainbed.sharpness_plots`.
"""
import json
import os
import sys

from domainbed import sharpness
from domainbed.errors import EXIT_BAD_INPUT, DomainBedError
from domainbed.lib import safe_write, validation
from domainbed.lib.cli import OneLineErrorParser, one_line_errors
from domainbed.lib.cli import squeeze as cli_squeeze


class NoJobs(DomainBedError):
    """Nothing to measure in the directories given (exit 2)."""

    exit_code = EXIT_BAD_INPUT


def parse_args(argv=None):
    parser = OneLineErrorParser(prog="python -m domainbed.scripts.sharpness",
                                description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="+", metavar="DIR", help="job or sweep directories")
    parser.add_argument("--model", choices=("final", "selected"), default="final")
    parser.add_argument("--rho", type=float, default=sharpness.DEFAULTS["rho"])
    parser.add_argument("--n_batches", type=int, default=sharpness.DEFAULTS["n_batches"])
    parser.add_argument("--batch_size", type=int, default=sharpness.DEFAULTS["batch_size"])
    parser.add_argument("--iterations", type=int, default=sharpness.DEFAULTS["iterations"],
                        help="power-iteration steps for the top eigenvalue")
    parser.add_argument("--seed", type=int, default=sharpness.DEFAULTS["seed"],
                        help="which batches, and the power iteration's start")
    parser.add_argument("--hparams_seed", type=int, default=None,
                        help="only the jobs of this hparam draw (0: the defaults)")
    parser.add_argument("--plot", metavar="DIR", default=None,
                        help="also draw the training loss along random filter-normalised "
                             "directions around each run: one PNG per dataset, algorithms "
                             "side by side (needs matplotlib)")
    parser.add_argument("--directions", type=int, default=None, metavar="K",
                        help="random directions per run for --plot (default 4)")
    parser.add_argument("--span", type=float, default=1.0,
                        help="the curves run over α in [-span, span] (default 1: one "
                             "filter norm)")
    parser.add_argument("--points", type=int, default=21,
                        help="points per curve, odd so that α = 0 is one (default 21)")
    parser.add_argument("--slice", action="store_true",
                        help="with --plot: also a 2-D slice along two of the directions")
    parser.add_argument("--slice_points", type=int, default=11,
                        help="points per side of the 2-D slice, odd (default 11)")
    parser.add_argument("--output", default=None,
                        help="also write one JSON line per job to this new file")
    parser.add_argument("--overwrite", action="store_true",
                        help="let --output replace an existing file")
    args = parser.parse_args(argv)
    try:
        check_numbers(args)
        check_plot_flags(args)
        if args.output:
            safe_write.check_new_output(args.output, "--output", args.overwrite)
    except (validation.ValidationError, safe_write.WriteRuleError) as error:
        parser.error(str(error))
    return args


# A ρ-ball this wide is no longer a neighbourhood (and 1e308 overflows to inf: NaN results).
MAX_RHO = 100.0


def check_numbers(args):
    validation.check_number("--rho", args.rho, 0, MAX_RHO, low_inclusive=False, example=0.05)
    validation.check_count("--n_batches", args.n_batches, 1, 100000)
    validation.check_count("--batch_size", args.batch_size, 1, 65536)
    validation.check_count("--iterations", args.iterations, 1, 100000)
    validation.check_seed("--seed", args.seed)
    if args.hparams_seed is not None:
        validation.check_seed("--hparams_seed", args.hparams_seed)


def check_plot_flags(args):
    """The loss-landscape flags: meaningful only with --plot (or --directions for
    --output), odd point counts, a plot directory that is not a file."""
    if args.directions is None:
        args.directions = 4 if args.plot else 0
    for flag in ("slice",):
        if getattr(args, flag) and not args.plot:
            raise validation.ValidationError(f"--{flag} draws into --plot DIR; add --plot DIR")
    if args.plot is not None:
        if not args.plot.strip():
            raise validation.ValidationError("--plot: the path is empty; give a directory")
        if os.path.lexists(args.plot) and not os.path.isdir(args.plot):
            raise validation.ValidationError(f"--plot {args.plot} exists and is not a "
                                             f"directory; give a directory for the figures")
        validation.check_count("--directions", args.directions, 1, 1000)
    else:
        validation.check_count("--directions", args.directions, 0, 1000)
    validation.check_number("--span", args.span, 0, MAX_RHO, low_inclusive=False, example=1.0)
    for flag in ("points", "slice_points"):
        value = getattr(args, flag)
        validation.check_count(f"--{flag}", value, 3, 1001)
        if value % 2 == 0:
            raise validation.ValidationError(f"--{flag} must be odd, so that α = 0 (the "
                                             f"trained weights) is one of them; got {value}")


def landscape_options(args):
    """`sharpness.loss_landscape`'s options, or None when no curve is asked for."""
    if not args.directions:
        return None
    return {"n_directions": args.directions, "span": args.span, "n_points": args.points,
            "slice_points": args.slice_points if args.slice else 0}


def skip_note(job, reason):
    print(f"sharpness: skipped {job}: {cli_squeeze(reason)}", file=sys.stderr, flush=True)


def measure_all(jobs, args):
    """The results of the jobs that could be measured, and how many were skipped (each
    with a one-line note naming it): one bad job never stops the others."""
    options = {k: getattr(args, k) for k in ("rho", "n_batches", "batch_size", "iterations", "seed")}
    results, skipped = [], 0
    for job in jobs:
        try:
            results.append(sharpness.measure_job(job, args.model, landscape_options(args),
                                                 **options))
        except KeyboardInterrupt:
            raise
        except Exception as error:   # a missing or truncated model, garbage records...
            skip_note(job, f"{type(error).__name__}: {error}")
            skipped += 1
    return sorted(results, key=sharpness.row_order), skipped


def main(argv=None):
    args = parse_args(argv)
    if args.plot:   # before any measuring: a missing matplotlib is one line, at once
        from domainbed.lib import plots
        plots.require_matplotlib()
    jobs, unreadable = sharpness.find_jobs(args.paths, args.hparams_seed)
    for job, reason in unreadable:
        skip_note(job, reason)
    if not jobs and not unreadable:
        raise NoJobs(f"no finished job directory (one with a 'done' file) in "
                     f"{' '.join(args.paths)}; give job or sweep directories")
    results, skipped = measure_all(jobs, args)
    skipped += len(unreadable)
    print("algorithm\ttest_envs\ttrial\tloss\trho_increase\ttop_eigenvalue\tjob")
    for result in results:
        print(f"{result['algorithm']}\t{result['test_envs']}\t{result['trial_seed']}\t"
              f"{result['loss']:.4f}\t{result['rho_increase']:.5f}\t"
              f"{result['top_eigenvalue']:.3f}\t{os.path.dirname(result['path'])}", flush=True)
    print("\n| algorithm | jobs | loss | rho-ball increase (mean ± s.e.) | "
          "top Hessian eigenvalue (mean ± s.e.) |\n|---|---|---|---|---|")
    for name, n, inc, inc_se, eig, eig_se, loss in sharpness.summarize(results):
        print(f"| {name} | {n} | {loss:.4f} | {inc:.5f} ± {inc_se:.5f} | {eig:.2f} ± {eig_se:.2f} |")
    if args.output:
        with safe_write.open_file(args.output, "w") as f:   # checked new (or --overwrite)
            for result in results:
                f.write(json.dumps(result) + "\n")
    if args.plot and results:
        from domainbed import sharpness_plots

        for path in sharpness_plots.plot_landscapes(results, args.plot):
            print(f"wrote {path}")
    if skipped:
        print(f"sharpness: {skipped} of {len(jobs) + len(unreadable)} jobs skipped (see the "
              "notes above)", file=sys.stderr)
        return 1
    return 0


def cli(argv=None):
    return one_line_errors(main, argv, "sharpness", "interrupted")


if __name__ == "__main__":
    raise SystemExit(cli())
