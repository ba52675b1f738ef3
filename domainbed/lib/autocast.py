"""The former import path of `domainbed.algorithms.autocast`: this name is that module
itself (moved next to the code that uses it, issue 32)."""
import sys

from domainbed.algorithms import autocast

sys.modules[__name__] = autocast
