"""Datasets: one module per family, each class registered where it is defined.

Upstream spellings work: `datasets.DATASETS`, `datasets.get_dataset_class(name)`,
`datasets.num_environments(name)` (ours: `num_environments(name, hparams, data_dir)` for
datasets whose environments depend on hparams or, like `Folder`, on the data). Importing this
package does not import torch.
"""
# Modules register their classes; import order = registration order for names not in upstream's list.
from domainbed.datasets import debug, mnist, image_folder, wilds, offline, iut  # noqa: F401,E401
from domainbed.datasets import spawrious  # noqa: F401
from domainbed.datasets import folder  # noqa: F401  (`Folder`: your own images)
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
