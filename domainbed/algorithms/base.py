"""The upstream `Algorithm` contract, plus full-state checkpoints.

`state_dict()` of every algorithm carries, besides parameters and buffers, the state of
every optimizer and random generator it holds as an attribute (through PyTorch's
`get_extra_state` hook), so that a checkpoint restores training exactly.
"""
import numpy as np
import torch


class Algorithm(torch.nn.Module):
    """Constructed as (input_shape, num_classes, num_domains, hparams).

    Subclasses implement `update(minibatches, unlabeled=None) -> dict[str, float]`, which
    takes one optimisation step internally, and `predict(x) -> logits`. Algorithm-specific
    hyperparameters are declared next to the class in `declare_hparams`.
    """

    def __init__(self, input_shape, num_classes, num_domains, hparams):
        super().__init__()
        self.hparams = hparams
        self.num_classes = num_classes
        self.num_domains = num_domains
        # A generator owned by the algorithm: its random draws do not disturb (and are not
        # disturbed by) anybody else's, and its state is saved with the model. Seeded from
        # the global RNG, which train.py seeds with --seed.
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

    def before_record(self, evals, test_envs, device):
        """Called by the training loop before each record's evaluation, with the record's
        evaluation loaders [(name, loader)], the test envs and the device; returns extra
        record keys (a dict). A hook for algorithms that choose the model they are
        evaluated as (SWAD: the averaged model); nothing by default."""
        return {}

    # -- full state -------------------------------------------------------------------
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

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # model.pkl holds weights and buffers only (upstream's layout): loading it strict
        # leaves the training state (optimizers, generators) as built instead of failing.
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        key = prefix + "_extra_state"
        if key not in state_dict and key in missing_keys:
            missing_keys.remove(key)

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
