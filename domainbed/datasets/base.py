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
* `declare_hparams(hparam, algorithm)`: dataset-level hparams (see hparams_registry);
* `SEEDED_BY_TRIAL = True`: the constructor also takes `trial_seed=` (train.py passes
  --trial_seed), for datasets that are a fresh random draw in every trial.
"""


class DatasetArgumentError(ValueError):
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
    SMALL_IMAGES = False      # selects the small-image hparam distributions
    CPU_SIZED = False         # ours: offline datasets get a narrower MNIST CNN (hparams)
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

    @staticmethod
    def declare_hparams(hparam, algorithm):
        """Declare dataset-level hparams: `hparam(name, default, random_fn)`. A dataset
        that declares lr, weight_decay or batch_size replaces the generic ones."""


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are missing or incomplete; the message names the download command."""


def missing_dataset_error(name, expected_path, data_dir_hint="DATA_DIR"):
    return DatasetNotFoundError(
        f"dataset {name} not found at {expected_path}. Download it with: "
        f"python -m domainbed.scripts.download --data_dir {data_dir_hint} --datasets {name}")
