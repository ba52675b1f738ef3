"""Flatness of trained models: the ρ-ball loss increase and the top Hessian eigenvalue.

    python -m domainbed.scripts.sharpness SWEEP_DIR_OR_JOB_DIR [...] [--output sharpness.jsonl]

Each finished job directory (or every one in a sweep directory) is measured at its final
model (or `--model selected`: model_iid.pkl) on fixed batches of its training data; one
line per job, then the mean ± standard error per algorithm. Library: `domainbed.sharpness`.
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
    parser.add_argument("--output", default=None,
                        help="also write one JSON line per job to this new file")
    parser.add_argument("--overwrite", action="store_true",
                        help="let --output replace an existing file")
    args = parser.parse_args(argv)
    try:
        check_numbers(args)
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


def skip_note(job, reason):
    print(f"sharpness: skipped {job}: {cli_squeeze(reason)}", file=sys.stderr, flush=True)


def measure_all(jobs, args):
    """The results of the jobs that could be measured, and how many were skipped (each
    with a one-line note naming it): one bad job never stops the others."""
    options = {k: getattr(args, k) for k in ("rho", "n_batches", "batch_size", "iterations", "seed")}
    results, skipped = [], 0
    for job in jobs:
        try:
            results.append(sharpness.measure_job(job, args.model, **options))
        except KeyboardInterrupt:
            raise
        except Exception as error:   # a missing or truncated model, garbage records...
            skip_note(job, f"{type(error).__name__}: {error}")
            skipped += 1
    return sorted(results, key=sharpness.row_order), skipped


def main(argv=None):
    args = parse_args(argv)
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
    if skipped:
        print(f"sharpness: {skipped} of {len(jobs) + len(unreadable)} jobs skipped (see the "
              "notes above)", file=sys.stderr)
        return 1
    return 0


def cli(argv=None):
    return one_line_errors(main, argv, "sharpness", "interrupted")


if __name__ == "__main__":
    raise SystemExit(cli())
