"""DomainBed algorithms, one module per family, each class registered where it is defined.

Upstream spellings work: `algorithms.ALGORITHMS`, `algorithms.get_algorithm_class(name)` and
`algorithms.ERM`. Importing this package does not import torch; classes load on first use.
"""
from domainbed.algorithms.registry import (  # noqa: F401
    UPSTREAM_ORDER,
    algorithm_names,
    get_algorithm_class,
    register_algorithm,
)


def __getattr__(name):
    if name == "ALGORITHMS":
        return algorithm_names()
    if name == "Algorithm":
        from domainbed.algorithms.base import Algorithm
        return Algorithm
    if name[:1].isupper():
        try:
            return get_algorithm_class(name)
        except NotImplementedError:
            pass
    raise AttributeError(f"module 'domainbed.algorithms' has no attribute {name!r}")
