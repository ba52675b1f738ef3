"""Flatness of trained models: the ρ-ball loss increase and the top Hessian eigenvalue.

    python -m domainbed.scripts.sharpness SWEEP_DIR_OR_JOB_DIR [...] [--output sharpness.jsonl]

Each finished job directory (or every one in a sweep directory) is measured at its final
model (or `--model selected`: model_iid.pkl) on fixed batches of its training data; one
line per job, then the mean ± standard error per algorithm. Library: `domainbed.sharpness`.
"""
import json

from domainbed import sharpness
from domainbed.lib.cli import CommandError, OneLineErrorParser, one_line_errors


class NoJobs(CommandError):
    exit_code = 2


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
    parser.add_argument("--output", default=None, help="also write one JSON line per job here")
    args = parser.parse_args(argv)
    if not args.rho > 0:
        parser.error(f"--rho must be > 0, got {args.rho}")
    for flag in ("n_batches", "batch_size", "iterations"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    for flag in ("seed", "hparams_seed"):
        if (getattr(args, flag) or 0) < 0:
            parser.error(f"--{flag} must be >= 0, got {getattr(args, flag)}")
    return args


def main(argv=None):
    args = parse_args(argv)
    jobs = sharpness.job_directories(args.paths, args.hparams_seed)
    if not jobs:
        raise NoJobs(f"no finished job directory (one with a 'done' file) in "
                              f"{' '.join(args.paths)}; give job or sweep directories")
    options = {k: getattr(args, k) for k in ("rho", "n_batches", "batch_size", "iterations", "seed")}
    results = []
    print("algorithm\ttest_envs\ttrial\tloss\trho_increase\ttop_eigenvalue\tjob")
    for job in jobs:
        result = sharpness.measure_job(job, args.model, **options)
        results.append(result)
        print(f"{result['algorithm']}\t{result['test_envs']}\t{result['trial_seed']}\t"
              f"{result['loss']:.4f}\t{result['rho_increase']:.5f}\t"
              f"{result['top_eigenvalue']:.3f}\t{job}", flush=True)
    print("\n| algorithm | jobs | loss | rho-ball increase (mean ± s.e.) | "
          "top Hessian eigenvalue (mean ± s.e.) |\n|---|---|---|---|---|")
    for name, n, inc, inc_se, eig, eig_se, loss in sharpness.summarize(results):
        print(f"| {name} | {n} | {loss:.4f} | {inc:.5f} ± {inc_se:.5f} | {eig:.2f} ± {eig_se:.2f} |")
    if args.output:
        with open(args.output, "w") as f:
            for result in results:
                f.write(json.dumps(result) + "\n")
    return 0


def cli(argv=None):
    return one_line_errors(main, argv, "sharpness", "interrupted")


if __name__ == "__main__":
    raise SystemExit(cli())
