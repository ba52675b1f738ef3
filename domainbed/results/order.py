"""A sweep's tables in upstream's order: `tables.build` bound to the registries (torch-free).

Rows follow `algorithms.ALGORITHMS` (then unregistered names, first seen first), tables
follow `datasets.DATASETS` (records of unregistered datasets are left out, as upstream),
columns are each dataset's environments (`EnvironmentNames`). Every command that prints
tables builds them here.
"""
from domainbed import algorithms, datasets
from domainbed.results import notes, selection, tables


def class_environments(dataset):
    return datasets.get_dataset_class(dataset).ENVIRONMENTS


class EnvironmentNames:
    """A dataset's column names for these records: its ENVIRONMENTS, or, for a dataset that
    reads its environments from --data_dir (`Folder`), those of its records' data_dir, read
    here (torch-free); when that is not readable here, env0, env1, ... (notes on stderr,
    once per dataset)."""

    def __init__(self, records):
        self.records = records
        self.names = {}

    def __call__(self, dataset):
        if dataset not in self.names:
            self.names[dataset] = self._names(dataset)
        return self.names[dataset]

    def _names(self, dataset):
        if not datasets.get_dataset_class(dataset).ENVIRONMENTS_FROM_DATA:
            return class_environments(dataset)
        runs = [r for r in self.records if r["args"]["dataset"] == dataset]
        n_envs = 0
        while f"env{n_envs}_out_acc" in runs[0]:
            n_envs += 1
        data_dirs = list(dict.fromkeys(str(r["args"].get("data_dir")) for r in runs))
        if len(data_dirs) > 1:
            notes.warn(f"warning: the {dataset} records come from {len(data_dirs)} data "
                           f"directories ({', '.join(data_dirs[:3])}); their numbers share "
                           "one table. Collect each dataset's sweep directory on its own")
        try:
            names = datasets.environment_names(dataset, None, data_dirs[0])
        except (datasets.DatasetArgumentError, datasets.DatasetNotFoundError, OSError) as e:
            names, reason = None, " ".join(str(e).split())
        else:
            reason = f"it now has {len(names)} environments, the records {n_envs}"
        if names is None or len(names) != n_envs:
            notes.warn(f"note: {dataset}'s environments are named env0..env{n_envs - 1}: "
                           f"--data_dir {data_dirs[0]} of its records is not usable here "
                           f"({reason})")
            names = [f"env{i}" for i in range(n_envs)]
        return list(names)


def registry_order(environments=class_environments):
    return tables.Order(
        algorithms=tuple(algorithms.ALGORITHMS), datasets=tuple(datasets.DATASETS),
        environments=environments)


def build(records, methods=None, environments=None):
    """`tables.Results` for `methods` (default: upstream's three selection methods);
    `environments` (dataset -> column names) defaults to `EnvironmentNames(records)`."""
    if methods is None:
        methods = selection.SELECTION_METHODS
    return tables.build(records, methods,
                           registry_order(environments or EnvironmentNames(records)))
