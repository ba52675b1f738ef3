"""Renderings of `Results` (torch-free): upstream's text and LaTeX, byte for byte, and
Markdown, CSV and JSON. Each prints to stdout (collect_results tees it into the sweep).

`render(results, fmt, comparison=None)` prints a whole document; `comparison` (an
`upstream_results.UpstreamComparison`) adds each cell's difference to the published number.
"""
import csv
import json
import sys

from domainbed.lib import misc

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
            columns = [*table.col_labels, "Avg"]
            print(f"\n### {table.name}\n")
            print("| " + " | ".join(["Algorithm", *columns]) + " |")
            print("|" + "---|" * (len(columns) + 1))
            for algorithm, cells in zip(table.row_labels,
                                        table.text_rows("markdown", _suffix(comparison))):
                print("| " + " | ".join([algorithm, *cells]) + " |")
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


def render_csv(results, comparison=None):
    fields = ["selection_method", "table", "algorithm", "column", "mean", "stderr", "n_trials"]
    if comparison:
        fields += ["published_mean", "delta", "protocol_differences"]
    writer = csv.DictWriter(sys.stdout, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for entry in _long_rows(results, comparison):
        if comparison:
            entry["protocol_differences"] = "; ".join(entry["protocol_differences"])
        writer.writerow({k: ("" if v is None else v) for k, v in entry.items()})


def render_json(results, comparison=None):
    document = {"total_records": results.n_records,
                "cells": list(_long_rows(results, comparison)),
                "tables": [_table_json(table) for table in results.all_tables()]}
    print(json.dumps(document, indent=1, sort_keys=True))


def _table_json(table):
    return {"selection_method": table.method, "table": table.name,
            "header": table.header_text, "columns": [*table.col_labels, "Avg"],
            "rows": {algorithm: {"trial_values": {c: cell.values for c, cell
                                                  in zip(table.col_labels, table.cells[row])}}
                     for row, algorithm in enumerate(table.row_labels)}}


RENDERERS = {"text": render_text, "latex": render_latex, "markdown": render_markdown,
             "csv": render_csv, "json": render_json}


def render(results, fmt="text", comparison=None):
    """Print `results` in one of FORMATS."""
    RENDERERS[fmt](results, comparison)
