"""The former import path of `domainbed.datasets.fast_data_loader`: this name is that module
itself (moved next to the code that uses it, issue 32)."""
import sys

from domainbed.datasets import fast_data_loader

sys.modules[__name__] = fast_data_loader
