"""Run a hyperparameter sweep: launch, delete_incomplete and status (torch-free).

    python -m domainbed.scripts.sweep launch --data_dir D --output_dir O --command_launcher local

The command line only: the parser and `main` are `domainbed.sweeps.arguments`, the sweep is
`domainbed.sweeps` (see its docstring for what this version adds to upstream's: liveness,
relaunching, status, validation, --selection_method, --best_hparams_from).
"""
import sys

from domainbed.sweeps.arguments import EPILOG, build_parser, main  # noqa: F401


def cli(argv=None):
    """main() with no traceback: an unexpected error is one line, exit code 1."""
    from domainbed.lib.cli import one_line_errors

    return one_line_errors(main, argv, "sweep",
                           "interrupted; run the same command again to continue")



if __name__ == "__main__":
    sys.exit(cli())
