"""The results API: records in, tables out, in every format (torch-free).

    report = reporting.load_sweep(sweep_dir)             # records, skipped lines, jobs
    results = reporting.build(report.records, methods, order)   # the tables, once
    reporting.render(results, "text")                    # or latex, markdown, csv, json

* `records`: loading `results.jsonl` files (tolerant of corrupt lines), grouping by
  (trial, dataset, algorithm, test env), the groups a selection method scores.
* `tables`: `build` -> `Results` of `Table`s of `Cell`s (numbers, not strings); upstream's
  `format_mean`; `cell_text`, the one place a number becomes a cell string.
* `render`: upstream's text and LaTeX (`print_table`), Markdown, CSV, JSON.
* `notes`: what collect_results says on stderr.

`domainbed.results` binds the registries' order and the selection methods (they live
above `lib`); the commands (`collect_results`, `list_top_hparams`, `reproduce`) use that.
"""
from domainbed.lib.reporting.notes import (  # noqa: F401
    missing_cell_reasons, print_load_notes, print_missing_cell_notes, warn)
from domainbed.lib.reporting.records import (  # noqa: F401
    JobSummary, LoadReport, completeness, get_grouped_records, load_records, load_sweep,
    parse_record_line, scored_groups)
from domainbed.lib.reporting.render import FORMATS, print_table, print_text_tables, render  # noqa: F401
from domainbed.lib.reporting.tables import (  # noqa: F401
    Cell, Order, Results, Table, build, cell_text, format_mean, mean_and_err)
