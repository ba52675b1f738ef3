"""A run's console and log files: upstream's out.txt / err.txt and the header blocks
(environment, args, hparams) printed into them."""
import os
import sys

import numpy as np

from domainbed.lib import misc


def _installed_version(distribution):
    """A package's version without importing it (importing torchvision costs seconds)."""
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def print_environment():
    import torch

    print("Environment:")
    print(f"\tPython: {sys.version.split(' ')[0]}")
    print(f"\tPyTorch: {torch.__version__}")
    print(f"\tTorchvision: {_installed_version('torchvision')}")
    print(f"\tCUDA: {torch.version.cuda}")
    print(f"\tCUDNN: {torch.backends.cudnn.version()}")
    print(f"\tNumPy: {np.__version__}")
    print(f"\tPIL: {_installed_version('Pillow')}")


def print_precision(config):
    """`Precision: bf16 autocast, channels_last` for a run with --precision or
    --memory_format set (training/precision.py); nothing for a default run, whose out.txt
    stays upstream's."""
    from domainbed.training import precision

    if precision.uses_bf16(config) or precision.uses_channels_last(config):
        print(f"Precision: {precision.describe(config)}")


def print_sorted_block(title, mapping):
    print(f"{title}:")
    for key, value in sorted(mapping.items()):
        print(f"\t{key}: {value}")


class Logs:
    """`with Logs(output_dir):` upstream's out.txt and err.txt through `misc.Tee`: stdout
    into out.txt, stderr into err.txt and out.txt, as upstream's, and to the console's
    *stderr* (upstream's went to its stdout, which hid tracebacks from launchers' error
    logs). Logging never stops the run (a full disk drops the file). The console streams
    are restored on exit."""

    def __init__(self, output_dir):
        self.output_dir = output_dir

    def __enter__(self):
        self.saved = sys.stdout, sys.stderr
        console_out, console_err = self.saved
        self.out = misc.Tee(os.path.join(self.output_dir, "out.txt"), console=console_out,
                            keep_going=True)
        self.err = misc.Tee(os.path.join(self.output_dir, "err.txt"), console=console_err,
                            also=self.out, keep_going=True)
        sys.stdout, sys.stderr = self.out, self.err
        return self

    def log_only(self, message):
        """Into err.txt and out.txt, not the console."""
        self.err.log_only(message)

    def __exit__(self, *exc):
        for tee in (self.err, self.out):
            tee.close()
        sys.stdout, sys.stderr = self.saved
        return False
