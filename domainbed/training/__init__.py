"""Training as a library: one job, from train.py's arguments to its records.

    import domainbed
    records = domainbed.train(dataset="Debug28", algorithm="ERM", test_envs=[0],
                              output_dir="out", data_dir=None, steps=100)

The modules, in the order a run meets them (each imports only those above it):
`errors` (exit codes, the DomainBedErrors), `arguments` (upstream's flags, parsed into the
run's `domainbed.config.RunConfig`), `plan` (the config validated against the registries,
the hparams), `lock` (the job directory), `build` (dataset,
splits, loaders, algorithm), `logs`, `models` (model files), `resume` (checkpoint.pt,
trimming results.jsonl), `loop` (steps, records, stop requests, the finish), `failures`
(the one failure path), `run` (the straight line: `run_job(config)`), `api` (`train`).
`scripts/train.py` is the command line over `run_job`. Importing this package imports torch.
"""
from domainbed.training.api import read_records, train
from domainbed.config import RunConfig
from domainbed.training.arguments import build_parser, parse_command_line
from domainbed.training.build import Job, prepare
from domainbed.training.errors import (EXIT_BAD_INPUT, EXIT_IO_ERROR, EXIT_NON_FINITE, BadInput,
                                       JobError, RunStopped, WriteError)
from domainbed.training.run import run_job

__all__ = ["train", "read_records", "run_job", "prepare", "Job", "RunConfig", "build_parser",
           "parse_command_line", "JobError", "BadInput", "WriteError", "RunStopped",
           "EXIT_BAD_INPUT", "EXIT_NON_FINITE", "EXIT_IO_ERROR"]
