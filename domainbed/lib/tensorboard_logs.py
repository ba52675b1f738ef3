"""The former import path of `domainbed.training.tensorboard_logs`: this name is that module
itself (moved next to the code that uses it, issue 32)."""
import sys

from domainbed.training import tensorboard_logs

sys.modules[__name__] = tensorboard_logs
