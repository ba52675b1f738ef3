"""Upstream's import path of `Q`: this name is the module `domainbed.results.query` itself."""
import sys

from domainbed.results import query

sys.modules[__name__] = query
