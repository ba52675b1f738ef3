"""`python -m domainbed.scripts.reproduce`: the main job behind ./reproduce.sh
(the command of `domainbed/studies/reproduce.py`)."""
from domainbed.studies.reproduce import main

if __name__ == "__main__":
    main()
