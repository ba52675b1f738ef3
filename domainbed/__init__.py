"""A DomainBed-compatible domain-generalization benchmark with FGMix.

Layering (no cycles, see docs/architecture.md): scripts -> studies -> sweeps, launchers,
training -> algorithms -> networks/datasets -> lib.
"""
__version__ = "0.1.0"


def __getattr__(name):
    # `domainbed.load_model(path)` and `domainbed.train(...)`, without importing torch when
    # the package is imported.
    if name == "load_model":
        from domainbed.model_files import load_model
        return load_model
    if name == "train":
        from domainbed.lib import threads

        threads.prepare_process()   # the OpenMP wait policy, before torch starts
        from domainbed.training.api import train
        return train
    raise AttributeError(f"module 'domainbed' has no attribute {name!r}")
