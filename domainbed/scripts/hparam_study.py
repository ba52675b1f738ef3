"""`python -m domainbed.scripts.hparam_study`: one-at-a-time hparam studies
(the command of `domainbed/studies/hparam_study.py`)."""
from domainbed.studies.hparam_study import main

if __name__ == "__main__":
    raise SystemExit(main())
