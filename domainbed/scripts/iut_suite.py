"""`python -m domainbed.scripts.iut_suite`: the invariance unit-test suite
(the command of `domainbed/studies/iut_suite.py`)."""
from domainbed.studies.iut_suite import main

if __name__ == "__main__":
    main()
