"""The multi-domain dataset contract (upstream's `MultipleDomainDataset`).

Dataset modules import torch/torchvision inside functions only, so the registry (names,
environments, sizes) is available to `collect_results` and `sweep` without torch.
"""


class MultipleDomainDataset:
    N_STEPS = 5001            # default number of training steps
    CHECKPOINT_FREQ = 100     # default number of steps between checkpoints
    N_WORKERS = 8             # data-loader workers
    ENVIRONMENTS = None       # environment names, in index order
    INPUT_SHAPE = None
    SMALL_IMAGES = False      # selects the small-image hparam distributions
    CPU_SIZED = False         # ours: offline datasets get a narrower MNIST CNN (hparams)

    def __getitem__(self, index):
        return self.datasets[index]

    def __len__(self):
        return len(self.datasets)


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are missing or incomplete; the message names the download command."""


def missing_dataset_error(name, expected_path, data_dir_hint="DATA_DIR"):
    return DatasetNotFoundError(
        f"dataset {name} not found at {expected_path}. Download it with: "
        f"python -m domainbed.scripts.download --data_dir {data_dir_hint} --datasets {name}")
