"""`python -m domainbed.scripts.reproduce`: the main job behind ./reproduce.sh
(the command of `domainbed/studies/reproduce.py`)."""
import sys

from domainbed.lib.cli import domainbed_errors
from domainbed.studies.reproduce import main

if __name__ == "__main__":
    sys.exit(domainbed_errors(main, None, "reproduce"))
