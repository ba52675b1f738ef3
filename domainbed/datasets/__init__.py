"""Datasets: one module per family, each class registered where it is defined.

Upstream spellings work: `datasets.DATASETS`, `datasets.get_dataset_class(name)`,
`datasets.num_environments(name)` (ours: `num_environments(name, hparams, data_dir)` for
datasets whose environments depend on hparams or, like `Folder`, on the data). Importing this
package does not import torch, nor the dataset modules: a class's module is imported when
the class is asked for.
"""
from domainbed.datasets.base import (  # noqa: F401
    DatasetArgumentError,
    DatasetNotFoundError,
    MultipleDomainDataset,
)
from domainbed.datasets.registry import (  # noqa: F401
    dataset_names,
    environment_names,
    get_dataset_class,
    num_environments,
    register_dataset,
)


def __getattr__(name):
    if name == "DATASETS":
        return dataset_names()
    raise AttributeError(f"module 'domainbed.datasets' has no attribute {name!r}")
