"""Support code copied verbatim into the generated `domainbed/fgmix/_upstream.py`.

This module is a template: `plugin_codegen.py` pastes everything below the marker line
into `_upstream.py`, after this project's base class (`domainbed/algorithms/base.py`,
verbatim: its own random generators, full-state checkpoints, `declare_hparams`). Here is only
what upstream needs on top: a torch version check, the `register_algorithm` the package's
modules decorate their classes with, and the entry point upstream's
`hparams_registry._hparams` calls.

The base class is self-contained on purpose rather than derived from upstream's
`domainbed.algorithms.Algorithm`: `algorithms.py` imports the package, so importing
`algorithms.py` back from here would be an import cycle. Upstream's base class holds
nothing but `self.hparams`, which ours stores too.
"""
# ---- plug-in support code starts here ----
import numpy as np
import torch

if not hasattr(torch, "func"):  # FGMix's meta-step uses torch.func.functional_call
    raise ImportError(f"the FGMix plug-in needs torch >= 2.0 (found {torch.__version__}); "
                      f"upgrade torch in this environment")


def _native(value):
    """numpy scalars as Python values: upstream's train.py json-dumps hparams, and
    np.int64 is not JSON-serialisable (the project's registry converts the same way)."""
    return value.item() if isinstance(value, np.generic) else value


REGISTERED = {}  # name -> class, filled as the package's modules are imported


def register_algorithm(cls):
    """Record `cls` under its name. Upstream finds algorithms in `algorithms.py`'s globals,
    where the patch imports them; this registry only serves `declare_hparams`."""
    REGISTERED[cls.__name__] = cls
    return cls


def declare_hparams(algorithm, hparam, dataset):
    """Declare `algorithm`'s hparams through upstream's `_hparam(name, default, random_fn)`.

    Called from the block the patch adds to `hparams_registry._hparams`. Each name is still
    drawn from its own `RandomState(seed_hash(random_seed, name))`, so the values equal the
    project's for the same (algorithm, dataset, seed).
    """
    def native_hparam(name, default, random_fn):
        hparam(name, _native(default), lambda r: _native(random_fn(r)))

    REGISTERED[algorithm].declare_hparams(native_hparam, dataset)
