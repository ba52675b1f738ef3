"""The dataset registry (torch-free): `@register_dataset` on the class, where it is defined."""
from domainbed.lib.registry import Registry

# Upstream's DATASETS order (b93c22a); collect_results orders tables by it. Ours follow.
UPSTREAM_ORDER = (
    "Debug28", "Debug224", "ColoredMNIST", "RotatedMNIST", "VLCS", "PACS", "OfficeHome",
    "TerraIncognita", "DomainNet", "SVIRO", "WILDSCamelyon", "WILDSFMoW",
    "SpawriousO2O_easy", "SpawriousO2O_medium", "SpawriousO2O_hard",
    "SpawriousM2M_easy", "SpawriousM2M_medium", "SpawriousM2M_hard",
)

_REGISTRY = Registry("dataset")


def register_dataset(cls):
    return _REGISTRY.register(cls)


def dataset_names():
    names = _REGISTRY.names()
    rank = {name: i for i, name in enumerate(UPSTREAM_ORDER)}
    return sorted((n for n in names if n in rank), key=rank.get) + [n for n in names if n not in rank]


def get_dataset_class(dataset_name):
    """The class registered as `dataset_name`; a "did you mean" error otherwise."""
    return _REGISTRY.get(dataset_name)


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
