"""train.py's command line (torch-free): upstream's flags, in upstream's order (the order of
`args` in every record), parsed into the run's one `RunConfig` (domainbed/config.py)."""
import argparse

from domainbed.config import SPEED_CHOICES, SPEED_OPTIONS, RunConfig
from domainbed.lib.cli import OneLineErrorParser

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


def parse_command_line(argv=None):
    """The RunConfig of train.py's command line (argv: its arguments; None: sys.argv)."""
    return RunConfig.from_args(build_parser().parse_args(argv))
