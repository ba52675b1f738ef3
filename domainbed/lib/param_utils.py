"""The former import path of `domainbed.algorithms.param_utils`: this name is that module
itself (moved next to the code that uses it, issue 32)."""
import sys

from domainbed.algorithms import param_utils

sys.modules[__name__] = param_utils
