"""`python -m domainbed.scripts.precision_study`: bf16 against fp32, paired accuracies of
two sweeps and CPU step times (the command of `domainbed/studies/precision_study.py`)."""
import sys

from domainbed.studies.precision_study import main

if __name__ == "__main__":
    sys.exit(main())
