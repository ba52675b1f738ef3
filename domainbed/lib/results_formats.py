"""Machine-readable renderings of collect_results' tables: Markdown, CSV and JSON (torch-free).

Each renderer prints to stdout (collect_results tees it into the sweep directory) and takes
(n_records, selection methods, {method name: [Table]}, comparison or None).
"""
import csv
import json
import sys


def _columns(table):
    return [*table.col_labels, "Avg"]


def _row_entries(table, row):
    """[(column, mean, stderr, n_values)] for one algorithm row, the Avg column last."""
    entries = [(column, cell.mean, cell.err, len(cell.values))
               for column, cell in zip(table.col_labels, table.cells[row])]
    entries.append(("Avg", table.averages[row], None, None))
    return entries


def _markdown_cell(mean, err, suffix):
    if mean is None:
        return "X" + suffix
    if err is None:
        return "{:.1f}".format(mean) + suffix
    return "{:.1f} ± {:.1f}".format(mean, err) + suffix


def render_markdown(n_records, methods, tables, comparison=None):
    print(f"Total records: {n_records}")
    for method in methods:
        print(f"\n## Model selection: {method.name}")
        for table in tables[method.name]:
            print(f"\n### {table.dataset or 'Averages'}\n")
            print("| " + " | ".join(["Algorithm", *_columns(table)]) + " |")
            print("|" + "---|" * (len(_columns(table)) + 1))
            for row, algorithm in enumerate(table.row_labels):
                cells = []
                for column, mean, err, _ in _row_entries(table, row):
                    suffix = (comparison.delta_text(table, algorithm, column, mean)
                              if comparison else "")
                    cells.append(_markdown_cell(mean, err, suffix))
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


def _long_rows(methods, tables, comparison):
    """One dict per (method, table, algorithm, column): the long format of CSV and JSON."""
    for method in methods:
        for table in tables[method.name]:
            for row, algorithm in enumerate(table.row_labels):
                for column, mean, err, n in _row_entries(table, row):
                    entry = {"selection_method": method.name,
                             "table": table.dataset or "Averages",
                             "algorithm": algorithm, "column": column,
                             "mean": mean, "stderr": err, "n_trials": n}
                    if comparison:
                        entry.update(_comparison_fields(comparison, table, algorithm, column, mean))
                    yield entry


def render_csv(n_records, methods, tables, comparison=None):
    fields = ["selection_method", "table", "algorithm", "column", "mean", "stderr", "n_trials"]
    if comparison:
        fields += ["published_mean", "delta", "protocol_differences"]
    writer = csv.DictWriter(sys.stdout, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for entry in _long_rows(methods, tables, comparison):
        if comparison:
            entry["protocol_differences"] = "; ".join(entry["protocol_differences"])
        writer.writerow({k: ("" if v is None else v) for k, v in entry.items()})


def render_json(n_records, methods, tables, comparison=None):
    document = {"total_records": n_records,
                "cells": list(_long_rows(methods, tables, comparison)),
                "tables": [_table_json(method, table)
                           for method in methods for table in tables[method.name]]}
    print(json.dumps(document, indent=1, sort_keys=True))


def _table_json(method, table):
    return {"selection_method": method.name, "table": table.dataset or "Averages",
            "header": table.header_text, "columns": _columns(table),
            "rows": {algorithm: {"trial_values": {c: cell.values for c, cell
                                                  in zip(table.col_labels, table.cells[row])}}
                     for row, algorithm in enumerate(table.row_labels)}}


RENDERERS = {"markdown": render_markdown, "csv": render_csv, "json": render_json}
