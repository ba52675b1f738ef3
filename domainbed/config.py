"""A training run's configuration: one frozen `RunConfig`, made once where a run is asked
for (train.py's command line, `domainbed.train(...)`, a sweep's job, a study) and then only
read (torch-free).

Making one checks every field on its own: seeds, fractions, step counts, the task, the test
environments' form and the speed options' choices; each refusal is a one-line
`ValidationError` (a BadInput, exit 2). What needs the registries (the algorithm and dataset
names, the hparams, the test environments against the dataset) is checked by
`training/plan.py`, which turns a config into the run's plan. A config is therefore never
half valid, and nothing downstream re-reads a flag with a default of its own.

`record_args()` is the `args` dict that records, out.txt, job.json and model.pkl carry:
upstream train.py's flags in its parser's order, then the speed options that differ from
their defaults (a default job's args are upstream's exactly).
"""
import dataclasses
import os

from domainbed.errors import BadInput
from domainbed.lib.validation import (MAX_STEPS, ValidationError, check_fraction, check_seed,
                                      is_int)

TASKS = ("domain_generalization", "domain_adaptation")

# Ours: opt-in ways to run faster on a GPU (docs/benchmarks.md), and more metrics. Each is
# one of the job's args (records, job identity, sweep hashes) only when it differs from its
# default, so a job that does not use them keeps upstream's args, command and hash exactly.
SPEED_OPTIONS = {"pipeline": "default", "precision": "fp32", "memory_format": "contiguous",
                 "metrics": "accuracy"}
SPEED_CHOICES = {"pipeline": ("default", "fast"), "precision": ("fp32", "bf16"),
                 "memory_format": ("contiguous", "channels_last"),
                 "metrics": ("accuracy", "all")}

# Args that do not change what a job computes: they may differ between the starts of one
# job. (data_dir: a dataset may move without orphaning its jobs.)
NON_IDENTIFYING_ARGS = ("output_dir", "data_dir", "skip_model_save", "save_model_every_checkpoint")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One training job's arguments: upstream train.py's flags, in its order, then ours."""
    data_dir: str = None
    dataset: str = "RotatedMNIST"
    algorithm: str = "ERM"
    task: str = "domain_generalization"
    hparams: str = None                 # the JSON-serialized overrides, as upstream's flag
    hparams_seed: int = 0
    trial_seed: int = 0
    seed: int = 0
    steps: int = None                   # None (or 0): the dataset's default
    checkpoint_freq: int = None         # None (or 0): the dataset's default
    test_envs: tuple = (0,)
    output_dir: str = "train_output"
    holdout_fraction: float = 0.2
    uda_holdout_fraction: float = 0
    skip_model_save: bool = False
    save_model_every_checkpoint: bool = False
    # Ours: the speed options (SPEED_OPTIONS), and TensorBoard logging, which is not one of
    # the job's args (it changes nothing that a job computes).
    pipeline: str = "default"
    precision: str = "fp32"
    memory_format: str = "contiguous"
    metrics: str = "accuracy"
    tensorboard: bool = False

    def __post_init__(self):
        for name in ("data_dir", "output_dir"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                object.__setattr__(self, name, os.fspath(value))
        check_fields(self)
        object.__setattr__(self, "test_envs", tuple(self.test_envs))

    @classmethod
    def from_args(cls, args):
        """The config of train.py's namespace, a record's or a sweep job's args dict (its
        missing names take their defaults); a name that is not a field is a BadInput."""
        values = dict(vars(args) if not isinstance(args, dict) else args)
        unknown = sorted(set(values) - set(FIELDS))
        if unknown:
            raise BadInput(f"unknown argument {unknown[0]!r}; the arguments are train.py's "
                           "flags: " + ", ".join(FIELDS))
        return cls(**values)

    def record_args(self):
        """The job's `args` as records write them (see the module's docstring)."""
        args = {name: getattr(self, name) for name in UPSTREAM_ARGS}
        args["test_envs"] = list(self.test_envs)
        # Sorted by name: the order of the flags in a sweep's command (sorted there, as
        # upstream's), so the records of every sweep job keep the order they always had.
        for name in sorted(SPEED_OPTIONS):
            if getattr(self, name) != SPEED_OPTIONS[name]:
                args[name] = getattr(self, name)
        return args

    def identity(self):
        """The args that identify the job (job.json, checkpoints), sorted by name."""
        return {k: v for k, v in sorted(self.record_args().items())
                if k not in NON_IDENTIFYING_ARGS}

    def replace(self, **changes):
        """A copy with these fields changed (checked again)."""
        return dataclasses.replace(self, **changes)


FIELDS = tuple(field.name for field in dataclasses.fields(RunConfig))
UPSTREAM_ARGS = FIELDS[:FIELDS.index("save_model_every_checkpoint") + 1]


def speed_option(options, name):
    """A speed option's value on a RunConfig or any namespace that may lack it (the
    benchmark's): its default when absent."""
    return getattr(options, name, SPEED_OPTIONS[name])


def check_fields(config):
    """Every field on its own, in the order train.py's checks always ran: the speed
    options, the seeds, the fractions, the step counts, the task, the test environments."""
    for name, choices in SPEED_CHOICES.items():
        value = getattr(config, name)
        if value not in choices:
            raise ValidationError(f"--{name} must be one of {', '.join(choices)}, got {value!r}")
    for flag in ("hparams_seed", "trial_seed", "seed"):
        check_seed(f"--{flag}", getattr(config, flag))
    check_fraction("--holdout_fraction", config.holdout_fraction)
    check_fraction("--uda_holdout_fraction", config.uda_holdout_fraction)
    for flag in ("steps", "checkpoint_freq"):
        value = getattr(config, flag)
        if value is not None and (not is_int(value) or not 0 <= value <= MAX_STEPS):
            raise ValidationError(f"--{flag} must be >= 0 and <= {MAX_STEPS} (an integer; 0 "
                                  f"means the dataset's default), got {value!r}")
    if config.task not in TASKS:
        raise ValidationError(f"--task must be one of {', '.join(TASKS)}, got {config.task!r}")
    if config.task == "domain_adaptation" and not config.uda_holdout_fraction:
        raise ValidationError("--task domain_adaptation needs unlabeled test-env data: set "
                              "--uda_holdout_fraction above 0 (e.g. 0.2)")
    test_envs = config.test_envs
    if not isinstance(test_envs, (list, tuple)) or not test_envs or not all(
            map(is_int, test_envs)):
        raise ValidationError(f"--test_envs must be one or more integers, got {test_envs!r}; "
                              "e.g. --test_envs 0")

