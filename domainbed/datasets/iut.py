"""Linear unit tests for invariance (Aubin, Slowik, Arjovsky, Bottou & Lopez-Paz, 2021):
the four classification problems, as DomainBed datasets.

Every input is a vector `x = [x_inv, x_spu]` of `d_inv + d_spu` coordinates. The
invariant block `x_inv` predicts the label in the same way in every environment; the
spurious block `x_spu` is correlated with the label too, but that correlation changes from
environment to environment. A method that found the invariant features keeps its accuracy
when the spurious block is made uninformative; one that relies on the spurious block does
not. The ground truth is known, so the question has an exact answer.

Problems (environment parameters are drawn before any sample):

* `IUTExample2` ("cows and camels"). Four latent groups k = 0..3: (cow, grass), (cow, sand),
  (camel, sand), (camel, grass). Animal means `a_k = (+1, +1, -1, -1)[k]` and background
  means `b_k = (+1, -1, -1, +1)[k]` on every coordinate of their block. Environment e has
  parameters (p, s): E0 = (0.95, 0.3), E1 = (0.97, 0.5), E2 = (0.99, 0.7), and every further
  environment draws p ~ U(0.9, 1) then s ~ U(0.3, 0.7). Each sample's group is drawn with
  probabilities [p s, (1-p) s, p (1-s), (1-p)(1-s)], so the background agrees with the
  animal with probability p and the animal is a cow with probability s. Features:
  `x_inv = 0.01 (eps / sqrt(10) + a_k)`, `x_spu = eps / sqrt(10) + b_k` (standard normal
  eps): the invariant block is a hundred times weaker than the spurious one. Label
  `y = 1 if sum(x_inv) > 0 else 0`, a function of the invariant block alone.
* `IUTExample3` (small invariant margin, large spurious margin). Environment e draws a
  spurious mean `mu_e ~ N(0, I_{d_spu})`. The first ceil(n/2) samples of an environment are
  class 0, the rest class 1 (half and half for even n). Class 0: `x_inv ~ N(+0.1, 0.1^2 I)`,
  `x_spu ~ N(+mu_e, 0.1^2 I)`; class 1: `x_inv ~ N(-0.1, 0.1^2 I)`, `x_spu ~ N(-mu_e, 0.1^2 I)`.
* `IUTExample2s`, `IUTExample3s` (scrambled): the same inputs multiplied on the right by an
  orthogonal d x d matrix Q (the Q factor of the QR decomposition of a standard-normal
  matrix, drawn once per data seed), so that both blocks are mixed into every coordinate.

Layout. Environments 0 .. n_envs-1 (named "E0", "E1", ...) are the training environments,
n samples each; their holdout split (train.py's `--holdout_fraction`) plays the protocol's
validation split. The last environment, "test" (index n_envs), is the only test
environment: for each training environment, n fresh samples drawn in the same way, whose
spurious block is then shuffled (one random permutation of the rows, applied to the
spurious coordinates only, within that environment), all pooled in environment order
(n_envs * n samples). Within each part the spurious block is then independent of the
label, so a model that relies on it loses its advantage there. The scrambled versions
apply Q after the shuffle. Labels are int64 class indices {0, 1} (two classes and a
softmax, as every DomainBed dataset; the published models use one logit).

Hparams, declared by these datasets (no random search over them: the random value is the
default): `iut_n_envs` (3 training environments), `iut_dim_inv` (5), `iut_dim_spu` (5),
`iut_n_samples` (n = 10000 per environment), and `iut_oracle` (False; True shuffles the
spurious block of the training environments too, from a stream of its own: the published
"Oracle", trained on data whose spurious block carries no information). They also declare the optimiser's hparams:
`lr` (default 1e-3, random 10^U(-4,-2)) and `weight_decay` (default 0, random 10^U(-6,-2)),
the published protocol's ERM distributions, and `batch_size` (default 64, random
int(2^U(5,8))). The batch size is our choice: DomainBed's minibatch training instead of
the published full-batch Adam. DANN and CDANN get lr_g, lr_d and weight_decay_g with the
distributions of lr and weight_decay.

Data seed. Trials are independent draws of a problem: the dataset is built from
--trial_seed (`SEEDED_BY_TRIAL`). All environment parameters and samples come from
`numpy.random.RandomState(seed_hash("invariance-unit-tests", process, trial_seed))`, where
process is "Example2" or "Example3", in this order: the environment parameters, then each
training environment's samples (E0 first), then each test part (E0's first, its samples then
its permutation). The scrambling matrix comes from its own stream,
`RandomState(seed_hash("invariance-unit-tests", "Example2s" or "Example3s", "scramble",
trial_seed))`. So a scrambled problem is exactly its plain twin of the same trial multiplied
by Q (paired comparisons), and the global RNGs are never used.
"""
import collections
import functools

import numpy as np

from domainbed.datasets.base import DatasetArgumentError, MultipleDomainDataset
from domainbed.datasets.registry import register_dataset
from domainbed.lib import misc

SEED_NAMESPACE = "invariance-unit-tests"

# name -> (default, minimum, meaning)
HPARAMS = {
    "iut_n_envs": (3, 2, "training environments"),
    "iut_dim_inv": (5, 1, "invariant coordinates"),
    "iut_dim_spu": (5, 0, "spurious coordinates"),
    # 10 keeps both holdout splits of every environment non-empty at --holdout_fraction 0.2.
    "iut_n_samples": (10000, 10, "samples per environment"),
}

Config = collections.namedtuple("Config", "n_envs dim_inv dim_spu n_samples")


def environment_names_for(n_envs):
    return [f"E{i}" for i in range(n_envs)] + ["test"]


# ---------------------------------------------------------------------------------------
# The data-generating processes (numpy, one RandomState; float64 until the very end)

EXAMPLE2_FIXED_ENVS = ((0.95, 0.3), (0.97, 0.5), (0.99, 0.7))   # (p, s) of E0, E1, E2
EXAMPLE2_ANIMAL = np.array([1.0, 1.0, -1.0, -1.0])       # invariant mean per group
EXAMPLE2_BACKGROUND = np.array([1.0, -1.0, -1.0, 1.0])   # spurious mean per group
EXAMPLE2_INV_SCALE = 1e-2
EXAMPLE2_SPU_SCALE = 1.0
EXAMPLE3_MARGIN = 0.1   # invariant class means +-0.1 on every coordinate
EXAMPLE3_STD = 0.1      # within-class standard deviation of both blocks


def example2_group_probabilities(p, s):
    """[p s, (1-p) s, p (1-s), (1-p)(1-s)]: groups 0 and 2 (background agrees) carry p."""
    return np.array([p * s, (1 - p) * s, p * (1 - s), (1 - p) * (1 - s)])


def example2_environments(rng, config):
    """(p, s) per training environment: E0..E2 fixed, further ones p ~ U(0.9, 1) then
    s ~ U(0.3, 0.7)."""
    params = []
    for e in range(config.n_envs):
        if e < len(EXAMPLE2_FIXED_ENVS):
            p, s = EXAMPLE2_FIXED_ENVS[e]
        else:
            p = rng.uniform(0.9, 1.0)
            s = rng.uniform(0.3, 0.7)
        params.append({"p": float(p), "s": float(s)})
    return params


def example2_samples(rng, env, n, config):
    """(x_inv, x_spu, y, groups) of n samples of one environment."""
    w = example2_group_probabilities(env["p"], env["s"])
    groups = rng.choice(len(w), size=n, p=w / w.sum())
    eps_inv = rng.standard_normal((n, config.dim_inv))
    eps_spu = rng.standard_normal((n, config.dim_spu))
    x_inv = (eps_inv / np.sqrt(10.0) + EXAMPLE2_ANIMAL[groups][:, None]) * EXAMPLE2_INV_SCALE
    x_spu = (eps_spu / np.sqrt(10.0) + EXAMPLE2_BACKGROUND[groups][:, None]) * EXAMPLE2_SPU_SCALE
    y = (x_inv.sum(axis=1) > 0).astype(np.int64)
    return x_inv, x_spu, y, groups


def example3_environments(rng, config):
    """One spurious mean mu_e ~ N(0, I_{d_spu}) per training environment."""
    return [{"mu": rng.standard_normal(config.dim_spu)} for _ in range(config.n_envs)]


def example3_samples(rng, env, n, config):
    """(x_inv, x_spu, y, None): ceil(n/2) samples of class 0 first, then n//2 of class 1."""
    n0, n1 = n - n // 2, n // 2
    inv0 = rng.standard_normal((n0, config.dim_inv)) * EXAMPLE3_STD + EXAMPLE3_MARGIN
    inv1 = rng.standard_normal((n1, config.dim_inv)) * EXAMPLE3_STD - EXAMPLE3_MARGIN
    spu0 = rng.standard_normal((n0, config.dim_spu)) * EXAMPLE3_STD + env["mu"]
    spu1 = rng.standard_normal((n1, config.dim_spu)) * EXAMPLE3_STD - env["mu"]
    y = np.concatenate([np.zeros(n0, dtype=np.int64), np.ones(n1, dtype=np.int64)])
    return np.concatenate([inv0, inv1]), np.concatenate([spu0, spu1]), y, None


PROCESSES = {
    "Example2": (example2_environments, example2_samples),
    "Example3": (example3_environments, example3_samples),
}


def scrambling_matrix(rng, dim):
    """The orthogonal Q of the QR decomposition of a standard-normal dim x dim matrix."""
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    return q


def shuffle_spurious(rng, x_spu):
    """One random permutation of the rows, applied to the spurious block only."""
    return x_spu[rng.permutation(len(x_spu))]


# ---------------------------------------------------------------------------------------
# The datasets

class InvarianceUnitTest(MultipleDomainDataset):
    """Base of the four problems (not registered itself); see the module docstring."""

    PROCESS = None            # "Example2" or "Example3"
    SCRAMBLED = False
    SEEDED_BY_TRIAL = True    # a fresh draw of the problem in every trial
    SMALL_IMAGES = False
    # Tensors in memory: workers would only add start-up time. 401 steps, 5 records: the
    # published protocol ran 10,000 full-batch steps; with DomainBed's minibatches, 401 steps
    # are what the Oracle needs to solve Example2 at the top of the lr range (lr 1e-2: error
    # 0.00 from step 350), and what the suite can afford (docs/invariance.md).
    N_WORKERS = 0
    N_STEPS = 401
    CHECKPOINT_FREQ = 100
    # Tens of thousands of 10-dim rows: evaluating in 64-row batches cost more than training.
    EVAL_BATCH_SIZE = 8192
    NUM_CLASSES = 2
    # With the default hparams; `environment_names(hparams)` and the instance's
    # `input_shape` follow iut_n_envs, iut_dim_inv and iut_dim_spu.
    ENVIRONMENTS = environment_names_for(HPARAMS["iut_n_envs"][0])
    INPUT_SHAPE = (HPARAMS["iut_dim_inv"][0] + HPARAMS["iut_dim_spu"][0],)

    # -- torch-free class interface --------------------------------------------------------
    @classmethod
    def config(cls, hparams=None):
        """The problem's Config from hparams (missing names: defaults); a
        DatasetArgumentError for a value that is not an integer at or above its minimum."""
        hparams = hparams or {}
        values = []
        for name, (default, minimum, meaning) in HPARAMS.items():
            value = hparams.get(name, default)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise DatasetArgumentError(
                    f"{cls.__name__}: hparam {name} ({meaning}) must be an integer >= "
                    f"{minimum}, got {value!r}; e.g. --hparams '{{\"{name}\": {default}}}'")
            values.append(value)
        return Config(*values)

    @classmethod
    def environment_names(cls, hparams=None, data_dir=None):
        return environment_names_for(cls.config(hparams).n_envs)

    @classmethod
    def test_env(cls, hparams=None):
        """The index of the "test" environment: the last one."""
        return cls.config(hparams).n_envs

    @classmethod
    def sweep_test_envs(cls, n_envs, single_test_envs):
        """Only the "test" environment is ever held out (with or without single_test_envs)."""
        return [[n_envs - 1]]

    @classmethod
    def check_arguments(cls, test_envs, hparams, data_dir=None):
        super().check_arguments(test_envs, hparams)
        test_env = cls.test_env(hparams)
        if list(test_envs) != [test_env]:
            raise DatasetArgumentError(
                f"{cls.__name__} tests on its last environment only: pass --test_envs "
                f"{test_env} (the 'test' environment after iut_n_envs={test_env} training "
                f"environments), got --test_envs {' '.join(str(e) for e in test_envs)}")

    @classmethod
    def optimization_hparams(cls):
        # The published protocol's ERM distributions; ours: DomainBed's minibatches rather
        # than the published full batch. (DANN's and CDANN's extra optimisers draw alike.)
        return {"lr": (1e-3, lambda r: 10**r.uniform(-4, -2)),
                "weight_decay": (0.0, lambda r: 10**r.uniform(-6, -2)),
                "batch_size": (64, lambda r: int(2**r.uniform(5, 8)))}

    @classmethod
    def declare_hparams(cls, hparam):
        super().declare_hparams(hparam)
        for name, (default, _, _) in HPARAMS.items():
            hparam(name, default, lambda r, default=default: default)
        # The published Oracle: training environments drawn like the test one.
        hparam("iut_oracle", False, lambda r: False)
        # The protocol's lr, weight_decay and batch_size for every algorithm (not upstream's
        # per-algorithm exceptions, e.g. ADRMX's lr grid).
        for name, (default, random_fn) in cls.optimization_hparams().items():
            hparam(name, default, random_fn)

    @classmethod
    def data_seed(cls, trial_seed):
        """Seed of the environment parameters and samples (shared with the plain/scrambled twin)."""
        return misc.seed_hash(SEED_NAMESPACE, cls.PROCESS, int(trial_seed))

    @classmethod
    def scramble_seed(cls, trial_seed):
        """Seed of the scrambling matrix (scrambled problems only)."""
        return misc.seed_hash(SEED_NAMESPACE, cls.PROCESS + "s", "scramble", int(trial_seed))

    # -- construction ------------------------------------------------------------------
    def __init__(self, root, test_envs, hparams, trial_seed=0):
        """root and test_envs are not used (no files; check_arguments refuses test envs
        other than the last one). hparams: the iut_* names, defaults if missing."""
        super().__init__()
        config = self.config(hparams)
        oracle = bool(hparams and hparams.get("iut_oracle"))
        self.problem_config = config
        self.trial_seed = int(trial_seed)
        self.input_shape = (config.dim_inv + config.dim_spu,)
        self.num_classes = self.NUM_CLASSES
        self.environments = environment_names_for(config.n_envs)
        built = _built_problem(type(self), config, oracle, self.trial_seed)
        self.scramble, self.env_params, self.groups, self.datasets = built

    def draw(self, config, oracle, trial_seed):
        """(scramble, env_params, groups, datasets): one seeded draw of the problem."""
        import torch
        from torch.utils.data import TensorDataset

        dim = config.dim_inv + config.dim_spu
        if self.SCRAMBLED:
            scramble = scrambling_matrix(np.random.RandomState(self.scramble_seed(trial_seed)), dim)
        else:
            scramble = np.eye(dim)
        draw_environments, draw_samples = PROCESSES[self.PROCESS]
        rng = np.random.RandomState(self.data_seed(trial_seed))
        env_params = draw_environments(rng, config)

        parts = [draw_samples(rng, env, config.n_samples, config) for env in env_params]
        if oracle:
            # Its own stream, so that the test environment stays the one the other runs of
            # this trial see (paired comparisons).
            oracle_rng = np.random.RandomState(
                misc.seed_hash(SEED_NAMESPACE, self.PROCESS, "oracle", int(trial_seed)))
            parts = [(x_inv, shuffle_spurious(oracle_rng, x_spu), y, groups)
                     for x_inv, x_spu, y, groups in parts]
        test_parts = []
        for env in env_params:
            x_inv, x_spu, y, groups = draw_samples(rng, env, config.n_samples, config)
            test_parts.append((x_inv, shuffle_spurious(rng, x_spu), y, groups))
        parts.append(tuple(
            None if part[0] is None else np.concatenate(part) for part in zip(*test_parts)))

        groups = [g for _, _, _, g in parts]   # Example2's latent groups
        datasets = []
        for x_inv, x_spu, y, _ in parts:
            x = np.concatenate([x_inv, x_spu], axis=1)
            if self.SCRAMBLED:
                x = x @ scramble
            datasets.append(TensorDataset(
                torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.int64)))
        return scramble, env_params, groups, datasets


@functools.lru_cache(maxsize=64)
def _built_problem(dataset_class, config, oracle, trial_seed):
    """Each draw built once per process: a warm sweep worker trains every algorithm and
    hparam draw of a trial on the same data, and building it costs more than a short run's
    training. The result is shared by the datasets that ask for it and never mutated."""
    return dataset_class.draw(dataset_class.__new__(dataset_class), config, oracle, trial_seed)


@register_dataset
class IUTExample2(InvarianceUnitTest):
    """Invariance unit test Example2, "cows and camels" (see the module docstring)."""

    PROCESS = "Example2"


@register_dataset
class IUTExample2s(InvarianceUnitTest):
    """Example2 with the scrambled (orthogonally mixed) inputs."""

    PROCESS = "Example2"
    SCRAMBLED = True


@register_dataset
class IUTExample3(InvarianceUnitTest):
    """Invariance unit test Example3, small invariant vs large spurious margin."""

    PROCESS = "Example3"


@register_dataset
class IUTExample3s(InvarianceUnitTest):
    """Example3 with the scrambled (orthogonally mixed) inputs."""

    PROCESS = "Example3"
    SCRAMBLED = True
