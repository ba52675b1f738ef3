"""A training job's arguments (torch-free): upstream train.py's flags, in upstream's order
(the order of `args` in every record), and which of them identify the job.

`build_parser()` is the command line's parser; `job_args(**values)` the same namespace for
the Python API, so that both write the same records."""
import argparse

from domainbed.training import tensorboard_logs
from domainbed.lib.cli import OneLineErrorParser
from domainbed.lib.validation import SPEED_CHOICES, SPEED_OPTIONS
from domainbed.training.errors import BadInput

# Args that do not change what a job computes: they may differ between the starts of one
# job. (data_dir: a dataset may move without orphaning its jobs.)
NON_IDENTIFYING_ARGS = ("output_dir", "data_dir", "skip_model_save", "save_model_every_checkpoint")

SPEED_HELP = {
    "pipeline": "ours: 'fast' decodes an image dataset once into a uint8 cache and augments "
                "batches on the device (upstream's augmentation distribution)",
    "precision": "ours: 'bf16' runs forward passes under bfloat16 autocast",
    "memory_format": "ours: 'channels_last' stores the network and image batches NHWC",
    "metrics": "ours: 'all' adds per-split precision, recall, F1, specificity, AUROC and "
               "the confusion matrix to each record (upstream's _acc keys unchanged)",
}


def build_parser():
    parser = OneLineErrorParser(prog="train.py", description="Domain generalization",
                                hint="see --help")
    parser.add_argument("--data_dir", type=str)
    parser.add_argument("--dataset", type=str, default="RotatedMNIST")
    parser.add_argument("--algorithm", type=str, default="ERM")
    parser.add_argument("--task", type=str, default="domain_generalization",
                        choices=["domain_generalization", "domain_adaptation"])
    parser.add_argument("--hparams", type=str, help="JSON-serialized hparams dict")
    parser.add_argument("--hparams_seed", type=int, default=0,
                        help='Seed for random hparams (0 means "default hparams")')
    parser.add_argument("--trial_seed", type=int, default=0,
                        help="Trial number (used for seeding split_dataset and random_hparams).")
    parser.add_argument("--seed", type=int, default=0, help="Seed for everything else")
    parser.add_argument("--steps", type=int, default=None,
                        help="Number of steps. Default is dataset-dependent.")
    parser.add_argument("--checkpoint_freq", type=int, default=None,
                        help="Checkpoint every N steps. Default is dataset-dependent.")
    parser.add_argument("--test_envs", type=int, nargs="+", default=[0])
    parser.add_argument("--output_dir", type=str, default="train_output")
    parser.add_argument("--holdout_fraction", type=float, default=0.2)
    parser.add_argument("--uda_holdout_fraction", type=float, default=0,
                        help="For domain adaptation, %% of test to use unlabeled for training.")
    parser.add_argument("--skip_model_save", action="store_true")
    parser.add_argument("--save_model_every_checkpoint", action="store_true")
    for name, choices in SPEED_CHOICES.items():
        parser.add_argument(f"--{name}", choices=choices, default=argparse.SUPPRESS,
                            help=f"{SPEED_HELP[name]} (default: {SPEED_OPTIONS[name]})")
    parser.add_argument("--tensorboard", action="store_true", default=argparse.SUPPRESS,
                        help="ours: also log TensorBoard scalars (not one of the job's args)")
    return parser


def job_args(**values):
    """The namespace the parser would give for these values (names: the flags without
    `--`; the others keep their defaults), in the parser's order. A name that is not a
    flag is a BadInput."""
    args = build_parser().parse_args([])
    for name, value in values.items():
        if not hasattr(args, name) and name not in SPEED_OPTIONS:
            raise BadInput(f"unknown argument {name!r}; the arguments are train.py's flags: "
                           + ", ".join(vars(args)))
        setattr(args, name, value)
    return args


def speed_option(args, name):
    """The value of a speed option (SPEED_OPTIONS) for these args, its default if unset."""
    return getattr(args, name, SPEED_OPTIONS[name])


def drop_default_speed_options(args):
    """Remove the speed options that equal their defaults (`--precision fp32` is the same
    job as no flag); a value that is not a choice is a BadInput."""
    for name, default in SPEED_OPTIONS.items():
        value = getattr(args, name, default)
        if value not in SPEED_CHOICES[name]:
            raise BadInput(f"--{name} must be one of {', '.join(SPEED_CHOICES[name])}, "
                           f"got {value!r}")
        if value == default and hasattr(args, name):
            delattr(args, name)
    return args


def identifying_args(args):
    return {k: v for k, v in sorted(vars(args).items()) if k not in NON_IDENTIFYING_ARGS}


def tensorboard_requested(args):
    """Whether to log TensorBoard scalars (--tensorboard, popped from the args so that it
    never reaches records or the job hash, or DOMAINBED_TENSORBOARD); a
    TensorBoardUnavailable (a BadInput) when it is asked for and cannot be written."""
    return tensorboard_logs.requested(vars(args).pop("tensorboard", False))
