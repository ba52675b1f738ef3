"""`python -m domainbed.scripts.sweep` (and `sweeps.arguments.main`): the sweep's command
line, from argv to `run_sweep` (torch-free).

The parser lives in the library so that a study runs a sweep in-process, exactly as the
command does (`studies/sweep_listing.py`); `scripts/sweep.py` is its front end.
"""
import argparse

from domainbed.errors import BadInput
from domainbed.launchers import command_launchers
from domainbed.lib.cli import OneLineErrorParser
from domainbed.config import SPEED_CHOICES, SPEED_OPTIONS
from domainbed.sweeps import config_file
from domainbed.sweeps.commands import run_sweep
from domainbed.sweeps.errors import SweepError

EPILOG = """\
Relaunching: run `launch` again with the same arguments after `sweep launch` was killed or
jobs were interrupted (preemption, reboot): it launches the Not-launched jobs, starts the
Not-started ones (made by a launch that stopped before running them) and resumes the
Interrupted ones (Incomplete, not running, no `failed` file, launched by a launcher that runs
jobs; for slurm, only jobs that started once). Nothing runs twice (train.py holds a lock on
its directory) and records are not duplicated (train.py resumes from its checkpoint).
Jobs made by `--command_launcher dummy` are never relaunched: `delete_incomplete` first.
`delete_incomplete` deletes Incomplete, Interrupted, Queued and Failed jobs, never Running ones.
Your own launchers: see domainbed/launchers/command_launchers.py (DOMAINBED_PLUGINS).
"""


def build_parser():
    # prog: the script's name, also when a study runs the sweep in-process.
    parser = OneLineErrorParser(
        prog="sweep.py", description="Run a sweep", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["launch", "delete_incomplete", "status"])
    parser.add_argument(
        "--config", metavar="FILE", default=None,
        help="ours: the sweep declared in a YAML or TOML file (datasets, algorithms, shared "
             "and per-algorithm hparams, random or grid search; see README). The flags that "
             "list jobs then come from the file; --data_dir, --output_dir and the launcher "
             "stay flags")
    parser.add_argument("--datasets", nargs="+", type=str, default=None,
                        help="default: every registered dataset without 'Debug' in its name")
    parser.add_argument("--algorithms", nargs="+", type=str, default=None,
                        help="default: every registered algorithm")
    parser.add_argument("--task", type=str, default="domain_generalization")
    parser.add_argument("--n_hparams_from", type=int, default=None, help="default: 0")
    parser.add_argument("--n_hparams", type=int, default=None, help="default: 20")
    parser.add_argument("--output_dir", type=str, required=True)
    parser.add_argument("--data_dir", type=str, required=True)
    parser.add_argument("--seed", type=int, default=0, help="unused (as upstream)")
    parser.add_argument("--n_trials", type=int, default=3)
    parser.add_argument("--command_launcher", type=str, default=None,
                        help="required for launch and delete_incomplete: "
                             + ", ".join(command_launchers.REGISTRY.names(plugins=False))
                             + " or a plug-in's")
    parser.add_argument("--launcher_args", type=str, default=None,
                        help="JSON options for the launcher, e.g. '{\"jobs_per_gpu\": 2}'")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--hparams", type=str, default=None)
    parser.add_argument("--holdout_fraction", type=float, default=0.2)
    parser.add_argument("--single_test_envs", action="store_true")
    for name, choices in SPEED_CHOICES.items():   # ours: passed to train.py when not default
        parser.add_argument(f"--{name}", choices=choices, default=SPEED_OPTIONS[name],
                            help=f"train.py's --{name} for every job (a job hash changes only "
                                 f"when it is not {SPEED_OPTIONS[name]})")
    parser.add_argument(
        "--paired_seeds", action="store_true",
        help="ours, opt-in: every algorithm of a (dataset, test envs, hparams draw, trial) "
             "cell gets the same --seed (same initialisation, data order and group draws), "
             "so that paired differences between algorithms carry no seed noise; job hashes "
             "then differ from upstream's")
    parser.add_argument("--skip_confirmation", action="store_true")
    parser.add_argument(
        "--selection_method", nargs="+", default=None, metavar="METHOD",
        help="only the jobs these model-selection methods read (for every command, so that "
             "launch, delete_incomplete and status see the same jobs): "
             "IIDAccuracySelectionMethod and OracleSelectionMethod read the runs with one "
             "test env, LeaveOneOutSelectionMethod the two-test-env runs too. Default: every "
             "job (upstream's sweep)")
    parser.add_argument(
        "--best_hparams_from", metavar="DIR", default=None,
        help="re-run the hparams that each --selection_method (default: the three of "
             "collect_results) selected in the finished sweep DIR, for every dataset, "
             "algorithm and test env there, with --n_trials trials; the jobs of method M go "
             "into OUTPUT_DIR/M, a sweep directory of its own for collect_results")
    return parser


def main(argv=None):
    """The command: argv (None: sys.argv) parsed, a --config file read, the sweep run; a
    refusal is argparse's usage error (one line, exit 2)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.config is not None:
            config_file.apply(args, {name: parser.get_default(name)
                                     for name in config_file.JOB_FLAGS})
        run_sweep(args)
    except (SweepError, BadInput) as error:   # a refusal: printed as a usage error, exit 2
        parser.exit(2, f"{parser.prog}: error: {error}\n")
