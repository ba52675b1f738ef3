"""A DomainBed-compatible domain-generalization benchmark with FGMix.

Layering (no cycles): scripts -> algorithms -> networks/datasets -> lib.
"""
__version__ = "0.1.0"


def __getattr__(name):
    # `domainbed.load_model(path)`, without importing torch when the package is imported.
    if name == "load_model":
        from domainbed.model_files import load_model
        return load_model
    raise AttributeError(f"module 'domainbed' has no attribute {name!r}")
