"""The former import path of the figures: this name is the module `domainbed.results.plots`
itself (same functions, same `MatplotlibMissing`)."""
import sys

from domainbed.results import plots

sys.modules[__name__] = plots
