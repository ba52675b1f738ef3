"""Upstream's results tables: built once as numbers, then rendered (torch-free).

* Building: `build(records, methods, order)` gives `Results`: for each selection method,
  one `Table` per dataset, then the averages table. A `Cell` holds the per-trial
  accuracies and their mean and standard error; every rendering (text, LaTeX, Markdown,
  CSV, JSON, plots) reads these numbers, and `cell_text` is the one place they become
  strings. The order of rows, tables and columns is an `Order` (`domainbed.results.order`
  binds the registries': `registry_order()`, and `build` with it).
* Rendering: `render(results, fmt, comparison=None)` prints a whole document in one of
  `FORMATS`: upstream's text and LaTeX byte for byte (`print_table`), Markdown, CSV and
  JSON; `comparison` (a `published.UpstreamComparison`) adds each cell's difference to the
  published number. Each prints to stdout (collect_results tees it into the sweep).
* The studies' tables (paired comparisons, learning curves, the unit-test suite): fixed-width
  text from `Column`s (`text_table`, `text_header`, `text_row`) and Markdown
  (`markdown_table`, which the Markdown rendering of `Results` uses too).
"""
import csv
import json
import sys
from dataclasses import dataclass

import numpy as np

from domainbed.lib import misc
from domainbed.results.query import Q
from domainbed.results.records import scored_groups


# =======================================================================================
# Building

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


# =======================================================================================
# Rendering

FORMATS = ("text", "latex", "markdown", "csv", "json")
LATEX_PREAMBLE = ["\\documentclass{article}", "\\usepackage{booktabs}",
                  "\\usepackage{adjustbox}", "\\begin{document}",
                  "\\section{Full DomainBed results}"]


def _suffix(comparison):
    return comparison.delta_text if comparison else None


# ---------------------------------------------------------------------------------------
# Upstream's text and LaTeX

def print_table(table, header_text, row_labels, col_labels, colwidth=10, latex=True):
    """Print `table` (rows of cell strings) with a label per row, as upstream does."""
    print("")
    if latex:
        print("\\begin{center}")
        print("\\adjustbox{max width=\\textwidth}{%")
        print("\\begin{tabular}{l" + "c" * (len(col_labels) - 1) + "}")
        print("\\toprule")
    else:
        print("--------", header_text)
    if latex:
        col_labels = ["\\textbf{" + str(label).replace("%", "\\%") + "}" for label in col_labels]
    misc.print_row(col_labels, colwidth=colwidth, latex=latex)
    if latex:
        print("\\midrule")
    for label, row in zip(row_labels, table):
        misc.print_row([label] + list(row), colwidth=colwidth, latex=latex)
    if latex:
        print("\\bottomrule")
        print("\\end{tabular}}")
        print("\\end{center}")


def print_text_tables(tables, latex=False, comparison=None):
    """Upstream's tables of one selection method (each preceded by \\subsubsection in LaTeX)."""
    widen = 12 if comparison else 0   # room for ' (+1.2*)' instead of truncating it
    for table in tables:
        if latex:
            print("")
            print("\\subsubsection{{{}}}".format(table.name))
        colwidth = (20 if table.dataset else 25) + widen
        print_table(table.text_rows("latex" if latex else "text", _suffix(comparison)),
                    table.header_text, table.row_labels,
                    ["Algorithm", *table.col_labels, "Avg"], colwidth=colwidth, latex=latex)
        if comparison:
            comparison.print_legend(table, latex)


def render_text(results, comparison=None, latex=False):
    if latex:
        for line in LATEX_PREAMBLE:
            print(line)
        print("% Total records: {}".format(results.n_records))
    else:
        print("Total records:", results.n_records)
    for method in results.methods:
        if latex:
            print()
            print("\\subsection{{Model selection: {}}}".format(method.name))
        print_text_tables(results.tables[method.name], latex, comparison)
    if latex:
        print("\\end{document}")


def render_latex(results, comparison=None):
    render_text(results, comparison, latex=True)


# ---------------------------------------------------------------------------------------
# Markdown, CSV, JSON

def render_markdown(results, comparison=None):
    print(f"Total records: {results.n_records}")
    for method in results.methods:
        print(f"\n## Model selection: {method.name}")
        for table in results.tables[method.name]:
            print(f"\n### {table.name}\n")
            rows = [[algorithm, *cells] for algorithm, cells in zip(
                table.row_labels, table.text_rows("markdown", _suffix(comparison)))]
            for line in markdown_table(["Algorithm", *table.col_labels, "Avg"], rows):
                print(line)
            if comparison:
                print()
                for line in comparison.legend_lines(table):
                    print(line + "  ")


def _comparison_fields(comparison, table, algorithm, column, mean):
    reference = comparison.published_value(table, algorithm, column)
    delta = None if reference is None or mean is None else mean - reference
    notes = comparison.notes(table, algorithm, column) if reference is not None else []
    return {"published_mean": reference, "delta": delta, "protocol_differences": notes}


def _long_rows(results, comparison):
    """One dict per (method, table, algorithm, column): the long format of CSV and JSON."""
    for table in results.all_tables():
        for row, algorithm in enumerate(table.row_labels):
            for column, mean, err, n in table.entries(row):
                entry = {"selection_method": table.method, "table": table.name,
                         "algorithm": algorithm, "column": column,
                         "mean": mean, "stderr": err, "n_trials": n}
                if comparison:
                    entry.update(_comparison_fields(comparison, table, algorithm, column, mean))
                yield entry


def render_csv(results, comparison=None, metric=None):
    fields = ["selection_method", "table", "algorithm", "column", "mean", "stderr", "n_trials"]
    if comparison:
        fields += ["published_mean", "delta", "protocol_differences"]
    if metric:
        fields += ["metric", "selected_on"]
    writer = csv.DictWriter(sys.stdout, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for entry in _long_rows(results, comparison):
        if comparison:
            entry["protocol_differences"] = "; ".join(entry["protocol_differences"])
        if metric:
            entry["metric"], entry["selected_on"] = metric
        writer.writerow({k: ("" if v is None else v) for k, v in entry.items()})


def render_json(results, comparison=None, metric=None):
    document = {"total_records": results.n_records,
                "cells": list(_long_rows(results, comparison)),
                "tables": [_table_json(table) for table in results.all_tables()]}
    if metric:
        document["metric"] = {"name": metric[0], "selected_on": metric[1]}
    print(json.dumps(document, indent=1, sort_keys=True))


def _table_json(table):
    return {"selection_method": table.method, "table": table.name,
            "header": table.header_text, "columns": [*table.col_labels, "Avg"],
            "rows": {algorithm: {"trial_values": {c: cell.values for c, cell
                                                  in zip(table.col_labels, table.cells[row])}}
                     for row, algorithm in enumerate(table.row_labels)}}


RENDERERS = {"text": render_text, "latex": render_latex, "markdown": render_markdown,
             "csv": render_csv, "json": render_json}


def render(results, fmt="text", comparison=None, metric=None):
    """Print `results` in one of FORMATS. `metric`: (name, what the runs were selected on)
    when the cells are not accuracies (collect_results --metric), for csv and json; the
    other formats get a header line from the caller."""
    if metric and fmt in ("csv", "json"):
        RENDERERS[fmt](results, comparison, metric)
    else:
        RENDERERS[fmt](results, comparison)


# =======================================================================================
# The studies' own tables (reproduce, hparam_study, the unit-test suite)

@dataclass(frozen=True)
class Column:
    """A column of a fixed-width text table: its `header`, and each value through `fmt`
    (a format string; a tuple value fills its fields in order, e.g. wins and pairs in
    '{:>7}/{:<4}'), None as `missing`; both aligned ('<' or '>') in `width` characters
    after `before` (a separator). A text longer than `width` is kept whole."""
    header: str
    width: int = 0
    align: str = ">"
    fmt: str = "{}"
    missing: str = ""
    before: str = ""

    def text(self, value):
        if value is None:
            text = self.missing
        else:
            text = self.fmt.format(*value) if isinstance(value, tuple) else self.fmt.format(value)
        return self.before + format(text, f"{self.align}{self.width}")

    def header_text(self):
        return self.before + format(self.header, f"{self.align}{self.width}")


def text_header(columns):
    """The header line of a fixed-width table."""
    return "".join(column.header_text() for column in columns)


def text_row(columns, values):
    """One line of a fixed-width table; fewer values than columns fill only the first
    columns (the line ends after its last value)."""
    return "".join(column.text(value) for column, value in zip(columns, values))


def text_table(columns, rows):
    """The lines of a fixed-width table: the header, then one line per row of values."""
    return [text_header(columns)] + [text_row(columns, row) for row in rows]


def markdown_table(columns, rows):
    """The lines of a Markdown table: the header, the rule, then one line per row of values.
    `columns`: `Column`s (their `fmt` and `missing`; widths are not used) or header strings
    (values shown as they are)."""
    columns = [c if isinstance(c, Column) else Column(c) for c in columns]
    return (["| " + " | ".join(column.header for column in columns) + " |",
             "|" + "---|" * len(columns)]
            + ["| " + " | ".join(column.text(value) for column, value in zip(columns, row)) + " |"
               for row in rows])
