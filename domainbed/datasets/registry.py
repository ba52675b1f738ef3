"""The dataset registry (torch-free): `@register_dataset` on the class, where it is defined.

Names are read off the decorators in the modules below without importing them (the
mechanism of lib/registry.py); a class's module is imported when the class is asked for.
Dataset modules import torch inside their constructors only, so a class, its
`ENVIRONMENTS` and `num_environments` are torch-free too.
"""
from domainbed.lib.registry import Registry

# Upstream's DATASETS order (b93c22a); collect_results orders tables by it. Ours follow.
UPSTREAM_ORDER = (
    "Debug28", "Debug224", "ColoredMNIST", "RotatedMNIST", "VLCS", "PACS", "OfficeHome",
    "TerraIncognita", "DomainNet", "SVIRO", "WILDSCamelyon", "WILDSFMoW",
    "SpawriousO2O_easy", "SpawriousO2O_medium", "SpawriousO2O_hard",
    "SpawriousM2M_easy", "SpawriousM2M_medium", "SpawriousM2M_hard",
)
# The modules that define datasets; names not in upstream's list follow in this order.
MODULES = ("debug", "mnist", "image_folder", "wilds", "offline", "iut", "spawrious", "folder")

DATASET_REGISTRY = Registry("dataset", "domainbed.datasets", "register_dataset",
                            modules=MODULES, upstream_order=UPSTREAM_ORDER)


def register_dataset(cls):
    return DATASET_REGISTRY.register(cls)


def dataset_names():
    return DATASET_REGISTRY.names()


def get_dataset_class(dataset_name):
    """The class registered as `dataset_name`; a "did you mean" error otherwise."""
    return DATASET_REGISTRY[dataset_name]


def environment_names(dataset_name, hparams=None, data_dir=None):
    """The environment names of `dataset_name` with these hparams (None: the defaults);
    datasets that read their environments from the data (`ENVIRONMENTS_FROM_DATA`, such as
    `Folder`) read them from `data_dir`. A DatasetArgumentError (or DatasetNotFoundError)
    if the dataset refuses them."""
    cls = get_dataset_class(dataset_name)
    if not getattr(cls, "ENVIRONMENTS_FROM_DATA", False):
        return cls.environment_names(hparams)   # (plug-ins may not take data_dir)
    names = cls.environment_names(hparams, data_dir)
    if names is None:
        from domainbed.datasets.base import DatasetArgumentError

        raise DatasetArgumentError(f"dataset {dataset_name} reads its environments from "
                                   "--data_dir; pass --data_dir")
    return names


def num_environments(dataset_name, hparams=None, data_dir=None):
    """How many environments `dataset_name` has (see `environment_names`)."""
    return len(environment_names(dataset_name, hparams, data_dir))
