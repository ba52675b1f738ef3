"""The multi-domain dataset contract (upstream's `MultipleDomainDataset`).

Dataset modules import torch/torchvision inside functions only, so the registry (names,
environments, sizes) is available to `collect_results` and `sweep` without torch.

Upstream's constructor is `(root, test_envs, hparams)` and every dataset keeps it. What a
dataset class may add (all torch-free classmethods, with upstream's behaviour by default):

* `environment_names(hparams, data_dir=None)`: the environments, when they depend on
  hparams or on the data (`ENVIRONMENTS_FROM_DATA = True`: read from `data_dir`, e.g. the
  domain folders of `Folder`; None when no data_dir is given);
* `sweep_test_envs(n_envs, single_test_envs)`: the test environments a sweep enumerates;
* `check_arguments(test_envs, hparams, data_dir=None)`: refuse bad arguments (and, given
  `data_dir`, bad data) before anything is built or written, with a `DatasetArgumentError`
  or `DatasetNotFoundError` whose message says what to do;
* hparams (see hparams_registry): `declare_hparams(hparam)`, the dataset's own, which
  hold for every algorithm; `declare_default_hparams(hparam)`, those an algorithm may
  declare its own way (lr, weight_decay, batch_size from `optimization_hparams()`, the
  MLP's sizes on vector inputs); `hparam_facts(name)`, what algorithms' `declare_hparams`
  are told about the dataset (`DatasetFacts`);
* `SEEDED_BY_TRIAL = True`: the constructor also takes `trial_seed=` (train.py passes
  --trial_seed), for datasets that are a fresh random draw in every trial.
"""
from domainbed.errors import BadInput


class DatasetFacts(str):
    """A dataset's name (a str, as upstream's hparam rules compare it, e.g. RDM's
    `dataset == "DomainNet"`) with the facts the algorithms' hparams depend on:

    * `small_images`: one of upstream's SMALL_IMAGES datasets (28x28 images), whose lr,
      weight_decay and batch_size distributions differ;
    * `lr`, `weight_decay`: the dataset's (default, random_fn) distributions of these, for
      the optimizers an algorithm adds (DANN's lr_g, lr_d and weight_decay_g draw alike).
    """

    def __new__(cls, name, small_images, lr, weight_decay):
        facts = super().__new__(cls, name)
        facts.small_images = small_images
        facts.lr = lr
        facts.weight_decay = weight_decay
        return facts


class DatasetArgumentError(BadInput, ValueError):
    """Arguments (test envs, hparams) a dataset refuses; the message says what to do."""


def all_test_env_combinations(n_envs):
    """Upstream's sweep enumeration: [i] then [i, j] for every j > i, for each i."""
    if n_envs < 3:
        raise ValueError(f"pairs of test envs need 3 or more environments, got {n_envs}")
    combinations = []
    for i in range(n_envs):
        combinations.append([i])
        for j in range(i + 1, n_envs):
            combinations.append([i, j])
    return combinations


class MultipleDomainDataset:
    N_STEPS = 5001            # default number of training steps
    CHECKPOINT_FREQ = 100     # default number of steps between checkpoints
    N_WORKERS = 8             # data-loader workers
    EVAL_BATCH_SIZE = 64      # upstream's; accuracy does not depend on it
    ENVIRONMENTS = None       # environment names, in index order
    INPUT_SHAPE = None
    SMALL_IMAGES = False      # in upstream's SMALL_IMAGES (28x28): its lr/wd/batch_size draws
    SEEDED_BY_TRIAL = False   # ours: True = the constructor also takes trial_seed=
    ENVIRONMENTS_FROM_DATA = False  # ours: True = the environments are read from data_dir

    def __getitem__(self, index):
        return self.datasets[index]

    def __len__(self):
        return len(self.datasets)

    @classmethod
    def environment_names(cls, hparams=None, data_dir=None):
        """The environment names for these hparams (None: the defaults) and data; upstream's
        datasets have a fixed list, `ENVIRONMENTS`."""
        return cls.ENVIRONMENTS

    @classmethod
    def sweep_test_envs(cls, n_envs, single_test_envs):
        """The test-env lists a sweep runs: every single env, and with
        `single_test_envs` False every pair as well (upstream's order)."""
        if single_test_envs:
            return [[i] for i in range(n_envs)]
        return all_test_env_combinations(n_envs)

    @classmethod
    def check_arguments(cls, test_envs, hparams, data_dir=None):
        """Raise DatasetArgumentError for arguments this dataset cannot run with.

        The generic check: a dataset with vector inputs takes hparam `vector_featurizer`
        'linear' or 'mlp' (networks.Featurizer)."""
        shape = cls.INPUT_SHAPE
        featurizer = (hparams or {}).get("vector_featurizer", "linear")
        if shape is not None and len(shape) == 1 and featurizer not in ("linear", "mlp"):
            raise DatasetArgumentError(
                f"{cls.__name__}: hparam vector_featurizer must be 'linear' or 'mlp', got "
                f"{featurizer!r}; e.g. --hparams '{{\"vector_featurizer\": \"linear\"}}'")

    # -- hparams (torch-free; see hparams_registry) ------------------------------------------
    @classmethod
    def has_vector_inputs(cls):
        return cls.INPUT_SHAPE is not None and len(cls.INPUT_SHAPE) == 1

    @classmethod
    def optimization_hparams(cls):
        """{name: (default, random_fn)} for lr, weight_decay and batch_size: upstream's
        distributions for its small (28x28) images or for the others."""
        if cls.SMALL_IMAGES:
            return {"lr": (1e-3, lambda r: 10**r.uniform(-4.5, -2.5)),
                    "weight_decay": (0.0, lambda r: 0.0),
                    "batch_size": (64, lambda r: int(2**r.uniform(3, 9)))}
        return {"lr": (5e-5, lambda r: 10**r.uniform(-5, -3.5)),
                "weight_decay": (0.0, lambda r: 10**r.uniform(-6, -2)),
                "batch_size": (32, lambda r: int(2**r.uniform(3, 5.5)))}

    @classmethod
    def hparam_facts(cls, name=None):
        """What an algorithm's `declare_hparams(hparam, dataset)` is told: DatasetFacts."""
        optimization = cls.optimization_hparams()
        return DatasetFacts(name or cls.__name__, bool(cls.SMALL_IMAGES), optimization["lr"],
                            optimization["weight_decay"])

    @classmethod
    def declare_hparams(cls, hparam):
        """The dataset's own hparams, `hparam(name, default, random_fn)`. They hold for
        every algorithm: an algorithm's declaration of the same name is left out."""
        if cls.has_vector_inputs():
            # Ours: vector inputs (no upstream dataset has them). "linear" = identity
            # featurizer, i.e. a linear model on the inputs; "mlp" = upstream's MLP.
            hparam("vector_featurizer", "linear", lambda r: "linear")

    @classmethod
    def declare_default_hparams(cls, hparam):
        """Hparams that depend on the dataset and that an algorithm may declare its own
        way: `hparam` declares each only where neither the dataset nor the algorithm did."""
        for name, (default, random_fn) in cls.optimization_hparams().items():
            hparam(name, default, random_fn)
        if cls.has_vector_inputs():
            # upstream's MLP (vector_featurizer "mlp"), unless the algorithm sizes its own
            # (DANN and CDANN: the same distributions; ADRMX: its own)
            hparam("mlp_width", 256, lambda r: int(2**r.uniform(6, 10)))
            hparam("mlp_depth", 3, lambda r: int(r.choice([3, 4, 5])))
            hparam("mlp_dropout", 0.0, lambda r: r.choice([0.0, 0.1, 0.5]))


class DatasetNotFoundError(BadInput, FileNotFoundError):
    """A dataset's files are missing or incomplete; the message names the download command."""


def missing_dataset_error(name, expected_path, data_dir_hint="DATA_DIR"):
    return DatasetNotFoundError(
        f"dataset {name} not found at {expected_path}. Download it with: "
        f"python -m domainbed.scripts.download --data_dir {data_dir_hint} --datasets {name}")
