"""A sweep's tables in upstream's order: `lib.reporting` bound to the registries (torch-free).

Rows follow `algorithms.ALGORITHMS` (then unregistered names, first seen first), tables
follow `datasets.DATASETS` (records of unregistered datasets are left out, as upstream),
columns are each dataset's ENVIRONMENTS. Every command that prints tables builds them here.
"""
from domainbed import algorithms, datasets, model_selection
from domainbed.lib import reporting


def registry_order():
    return reporting.Order(
        algorithms=tuple(algorithms.ALGORITHMS), datasets=tuple(datasets.DATASETS),
        environments=lambda dataset: datasets.get_dataset_class(dataset).ENVIRONMENTS)


def build(records, methods=None):
    """`reporting.Results` for `methods` (default: upstream's three selection methods)."""
    if methods is None:
        methods = model_selection.SELECTION_METHODS
    return reporting.build(records, methods, registry_order())
