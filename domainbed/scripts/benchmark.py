"""`python -m domainbed.scripts.benchmark`: side-by-side step timings and run costs
(the command of `domainbed/studies/benchmark.py`)."""
import sys

from domainbed.studies.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
