"""Upstream's import path of the results API (`reporting.load_records`,
`get_grouped_records`, as upstream's collect_results imports them), and the names the
former package `lib/reporting/` exported: re-exported from `domainbed.results`."""
from domainbed.results.notes import (  # noqa: F401
    missing_cell_reasons, print_load_notes, print_missing_cell_notes, warn)
from domainbed.results.records import (  # noqa: F401
    JobSummary, LoadReport, completeness, get_grouped_records, load_records, load_sweep,
    parse_record_line, scored_groups)
from domainbed.results.tables import (  # noqa: F401
    FORMATS, Cell, Order, Results, Table, build, cell_text, format_mean, mean_and_err,
    print_table, print_text_tables, render)
