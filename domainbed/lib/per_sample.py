"""The former import path of `domainbed.algorithms.per_sample`: this name is that module
itself (moved next to the code that uses it, issue 32)."""
import sys

from domainbed.algorithms import per_sample

sys.modules[__name__] = per_sample
