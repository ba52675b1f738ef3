"""Weight soups of a finished sweep: average the weights of the runs it already trained.

    python -m domainbed.scripts.soup --input_dir SWEEP --output_dir SOUPS [--kind uniform greedy]

For each (dataset, algorithm, test env, trial) group of SWEEP's finished single-test-env
runs: a uniform soup (the mean of every run's weights) and a greedy soup (runs in
decreasing training-domain validation accuracy, each kept if that accuracy does not drop),
BatchNorm statistics recomputed, evaluated on the runs' splits and written as run
directories under SOUPS (`collect_results --input_dir SOUPS` shows rows such as
`ERM+UniformSoup`). A rerun skips the soups already made. Library: `domainbed.soups`.
"""
import sys

from domainbed import soups
from domainbed.lib import validation
from domainbed.lib.cli import OneLineErrorParser, one_line_errors


def parse_args(argv=None):
    parser = OneLineErrorParser(prog="python -m domainbed.scripts.soup",
                                description=__doc__.split("\n")[0], hint="see --help")
    parser.add_argument("--input_dir", required=True,
                        help="a sweep's --output_dir (its finished runs are the members)")
    parser.add_argument("--output_dir", required=True,
                        help="where the soups' run directories go (new, or made by soup)")
    parser.add_argument("--kind", nargs="+", choices=tuple(soups.KINDS),
                        default=list(soups.KINDS), help="which soups (default: both)")
    parser.add_argument("--model", choices=tuple(soups.MODELS), default="final",
                        help="each run's final model.pkl (default), or 'selected': "
                             "model_iid.pkl (sweeps run with DOMAINBED_SAVE_SELECTED=1)")
    parser.add_argument("--data_dir", default=None,
                        help="the datasets' directory, when not the runs' --data_dir")
    parser.add_argument("--bn_batches", type=int, default=soups.DEFAULT_BN_BATCHES,
                        help="batches of each training environment for recomputing "
                             "BatchNorm statistics (networks with BatchNorm only)")
    args = parser.parse_args(argv)
    try:
        validation.check_count("--bn_batches", args.bn_batches, 1, 1000000)
    except validation.ValidationError as error:
        parser.error(str(error))
    args.kind = list(dict.fromkeys(args.kind))
    return args


def main(argv=None):
    args = parse_args(argv)
    summary = soups.make_soups(args.input_dir, args.output_dir, args.kind, args.model,
                               args.data_dir, args.bn_batches)
    return 1 if summary["skipped"] else 0


def cli(argv=None):
    return one_line_errors(main, argv, "soup", "interrupted; rerun the same command to "
                           "make the soups not yet made")


if __name__ == "__main__":
    sys.exit(cli())
