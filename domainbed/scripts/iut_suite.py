"""`python -m domainbed.scripts.iut_suite`: the invariance unit-test suite
(the command of `domainbed/studies/iut_suite.py`)."""
import sys

from domainbed.lib.cli import domainbed_errors
from domainbed.studies.iut_suite import main


def cli(argv=None):
    """The suite; a DomainBedError is one line and its exit code (main returns the summary)."""
    def run(argv):
        main(argv)
        return 0

    return domainbed_errors(run, argv, "iut suite")


if __name__ == "__main__":
    sys.exit(cli())
