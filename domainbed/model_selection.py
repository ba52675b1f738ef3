"""Upstream's import path of the model-selection methods: this name is the module
`domainbed.results.selection` itself (same classes, same functions)."""
import sys

from domainbed.results import selection

sys.modules[__name__] = selection
