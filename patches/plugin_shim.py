"""Support code copied verbatim into the generated `domainbed/fgmix_plugin.py`.

This module is a template: `plugin_codegen.py` pastes everything below the marker line
into the plug-in. It gives the FGMix classes, inside an upstream DomainBed checkout, what
this project's `domainbed.algorithms.base.Algorithm` gives them and upstream's base class
lacks (their own random generators, full-state checkpoints, `declare_hparams`), plus the
entry point upstream's `hparams_registry._hparams` calls.

The base class is self-contained on purpose rather than derived from upstream's
`domainbed.algorithms.Algorithm`: `algorithms.py` imports the plug-in, so importing
`algorithms.py` back from here would be an import cycle. Upstream's base class holds
nothing but `self.hparams`, which this one stores too.
"""
# ---- plug-in support code starts here ----
import numpy as np
import torch

if not hasattr(torch, "func"):  # FGMix's meta-step uses torch.func.functional_call
    raise ImportError(f"the FGMix plug-in needs torch >= 2.0 (found {torch.__version__}); "
                      f"upgrade torch in this environment")


class Algorithm(torch.nn.Module):
    """Upstream's contract `(input_shape, num_classes, num_domains, hparams)`, plus what
    the FGMix family expects from its base class in the project it comes from."""

    def __init__(self, input_shape, num_classes, num_domains, hparams):
        super().__init__()
        self.hparams = hparams
        self.num_classes = num_classes
        self.num_domains = num_domains
        # Own generators, seeded from the global RNG (which train.py seeds with --seed),
        # drawn exactly as the project's base class draws them, so that the same seed
        # gives the same training run in both code bases.
        seed = int(torch.randint(0, 2**62, (1,)).item())
        self.generator = torch.Generator().manual_seed(seed)
        self.numpy_rng = np.random.Generator(np.random.PCG64(seed))

    @staticmethod
    def declare_hparams(hparam, dataset):
        """Declare algorithm-specific hparams: `hparam(name, default, random_fn)`."""

    def update(self, minibatches, unlabeled=None):
        raise NotImplementedError

    def predict(self, x):
        raise NotImplementedError

    # state_dict() also carries the optimizers' and generators' states (exact resume).
    def _stateful_attributes(self):
        for name, value in vars(self).items():
            if isinstance(value, (torch.optim.Optimizer, torch.Generator, np.random.Generator)):
                yield name, value

    def get_extra_state(self):
        state = {}
        for name, value in self._stateful_attributes():
            if isinstance(value, torch.optim.Optimizer):
                state[name] = value.state_dict()
            elif isinstance(value, torch.Generator):
                state[name] = value.get_state()
            else:
                state[name] = value.bit_generator.state
        return state

    def set_extra_state(self, state):
        attributes = dict(self._stateful_attributes())
        for name, value in state.items():
            target = attributes.get(name)
            if isinstance(target, torch.optim.Optimizer):
                target.load_state_dict(value)
            elif isinstance(target, torch.Generator):
                target.set_state(value)
            elif isinstance(target, np.random.Generator):
                target.bit_generator.state = value


def _native(value):
    """numpy scalars as Python values: upstream's train.py json-dumps hparams, and
    np.int64 is not JSON-serialisable (the project's registry converts the same way)."""
    return value.item() if isinstance(value, np.generic) else value


def declare_hparams(algorithm, hparam, dataset):
    """Declare `algorithm`'s hparams through upstream's `_hparam(name, default, random_fn)`.

    Called from the block the patch adds to `hparams_registry._hparams`. Each name is still
    drawn from its own `RandomState(seed_hash(random_seed, name))`, so the values equal the
    project's for the same (algorithm, dataset, seed).
    """
    def native_hparam(name, default, random_fn):
        hparam(name, _native(default), lambda r: _native(random_fn(r)))

    globals()[algorithm].declare_hparams(native_hparam, dataset)
