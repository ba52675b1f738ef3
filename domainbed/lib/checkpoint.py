"""The former import path of `domainbed.training.checkpoint`: this name is that module
itself (moved next to the code that uses it, issue 32)."""
import sys

from domainbed.training import checkpoint

sys.modules[__name__] = checkpoint
