"""Upstream's results tables as data, built once per selection method (torch-free).

`build(records, methods, order)` gives `Results`: for each selection method, one `Table`
per dataset, then the averages table. A `Cell` holds the per-trial accuracies and their
mean and standard error; every rendering (text, LaTeX, Markdown, CSV, JSON, plots) reads
these numbers, and `cell_text` is the one place they become strings.

The order of rows, tables and columns comes from the registries, which live above this
package: callers pass an `Order` (`domainbed.results.registry_order()` is upstream's).
"""
from dataclasses import dataclass

import numpy as np

from domainbed.lib.query import Q
from domainbed.lib.reporting.records import scored_groups

# Upstream's cell strings ('X' for no value; the Avg column has no error).
MEAN_FORMATS = {"text": "{:.1f} +/- {:.1f}", "latex": "{:.1f} $\\pm$ {:.1f}",
                "markdown": "{:.1f} ± {:.1f}"}


def mean_and_err(data):
    """100 * mean and 100 * population std / sqrt(n), as upstream; (None, None) if empty."""
    if len(data) == 0:
        return None, None
    mean = 100 * np.mean(list(data))
    err = 100 * np.std(list(data) / np.sqrt(len(data)))
    return mean, err


def cell_text(mean, err=None, style="text"):
    """'X' without a value, '{:.1f}' without an error (Avg), else mean +/- err in `style`."""
    if mean is None:
        return "X"
    if err is None:
        return "{:.1f}".format(mean)
    return MEAN_FORMATS[style].format(mean, err)


def format_mean(data, latex):
    """Upstream's (mean, err, text) of one cell."""
    mean, err = mean_and_err(data)
    return mean, err, cell_text(mean, err, "latex" if latex else "text")


@dataclass
class Cell:
    values: list          # one accuracy in [0, 1] per trial (an average over envs in Averages)
    mean: float = None    # in %, None when there are no values
    err: float = None

    @classmethod
    def of(cls, values):
        mean, err = mean_and_err(values)
        return cls(values=[float(v) for v in values], mean=mean, err=err)


@dataclass
class Table:
    """One table: rows = algorithms, columns = environments (or datasets), then Avg."""
    method: str           # selection method name
    dataset: str          # the dataset, or None for the averages table
    row_labels: list
    col_labels: list      # column names without 'Algorithm' and 'Avg'
    cells: list           # cells[row][col]
    averages: list        # Avg column: float (in %) or None ('X')

    @property
    def header_text(self):
        if self.dataset is None:
            return f"Averages, model selection method: {self.method}"
        return f"Dataset: {self.dataset}, model selection method: {self.method}"

    @property
    def name(self):
        return self.dataset or "Averages"

    def entries(self, row):
        """[(column, mean, err, n values)] of one row, the Avg column last (err, n: None)."""
        entries = [(column, cell.mean, cell.err, len(cell.values))
                   for column, cell in zip(self.col_labels, self.cells[row])]
        entries.append(("Avg", self.averages[row], None, None))
        return entries

    def text_rows(self, style="text", suffix=None):
        """The cell strings of every row; `suffix(table, algorithm, column, mean)` is appended
        to each (the comparison with the published numbers)."""
        return [[cell_text(mean, err, style)
                 + (suffix(self, algorithm, column, mean) if suffix else "")
                 for column, mean, err, _ in self.entries(row)]
                for row, algorithm in enumerate(self.row_labels)]


@dataclass(frozen=True)
class Order:
    """Row, table and column order: known algorithms first in this order, then the others
    in first-seen order; only the known datasets, in this order; `environments(dataset)`
    the column names of a dataset's table."""
    algorithms: tuple
    datasets: tuple
    environments: object


@dataclass
class Results:
    """Every table of a sweep: `tables[method name]` = per-dataset tables, then Averages."""
    n_records: int
    methods: list
    tables: dict

    def all_tables(self):
        return [table for method in self.methods for table in self.tables[method.name]]


def algorithm_order(records, known_algorithms):
    """Known algorithms in their registry order, then the others in first-seen order."""
    present = Q(records).select("args.algorithm").unique()
    return ([name for name in known_algorithms if name in present]
            + [name for name in present if name not in known_algorithms])


def dataset_order(records, known_datasets):
    """The datasets of the records that are registered, in registry order (others ignored)."""
    present = set(Q(records).select("args.dataset").unique())
    return [name for name in known_datasets if name in present]


def build(records, methods, order):
    """The tables of every selection method in `methods` (see Results)."""
    algorithms = algorithm_order(records, order.algorithms)
    datasets = dataset_order(records, order.datasets)
    tables = {}
    for method in methods:
        groups = scored_groups(records, method)
        tables[method.name] = [
            _dataset_table(groups, method.name, dataset, algorithms, order.environments(dataset))
            for dataset in datasets]
        tables[method.name].append(_averages_table(groups, method.name, datasets, algorithms))
    return Results(n_records=len(records), methods=list(methods), tables=tables)


def _row_average(cells):
    means = [cell.mean for cell in cells]
    if not means or None in means:
        return None
    return sum(means) / len(means)


def _dataset_table(groups, method_name, dataset, algorithms, environments):
    cells = []
    for algorithm in algorithms:
        row = []
        for test_env in range(len(environments)):
            accs = groups.filter_equals("dataset, algorithm, test_env",
                                        (dataset, algorithm, test_env)).select("sweep_acc")
            row.append(Cell.of(list(accs)))
        cells.append(row)
    return Table(method_name, dataset, list(algorithms), list(environments), cells,
                 [_row_average(row) for row in cells])


def _averages_table(groups, method_name, datasets, algorithms):
    """Per (algorithm, dataset): average over test envs within a trial, then over trials."""
    cells = []
    for algorithm in algorithms:
        row = []
        for dataset in datasets:
            trial_means = (groups.filter_equals("algorithm, dataset", (algorithm, dataset))
                           .group("trial_seed")
                           .map(lambda _, trial: trial.select("sweep_acc").mean()))
            row.append(Cell.of(list(trial_means)))
        cells.append(row)
    return Table(method_name, None, list(algorithms), list(datasets), cells,
                 [_row_average(row) for row in cells])
