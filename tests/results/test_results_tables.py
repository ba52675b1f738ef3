"""results.tables' fixed-width and Markdown tables (the studies' tables), by hand."""
from domainbed.results.tables import Column, markdown_table, text_header, text_row, text_table

COLUMNS = [Column("name", 6, "<"), Column("acc", 6, fmt="{:.1f}"),
           Column("wins", 8, fmt="{:>3}/{:<3}"), Column("note", align="<", before="  ", missing="-")]


def test_text_table_formats_aligns_and_ends_short_rows_early():
    assert text_table(COLUMNS, [("ERM", 71.26, (2, 3), None), ("A", 5.0)]) == [
        "name     acc    wins  note",
        "ERM     71.3   2/3    -",
        "A        5.0",
    ]
    assert text_header(COLUMNS[:2]) == "name     acc"
    # A text wider than its column is kept whole (as an f-string field is).
    assert text_row(COLUMNS[:2], ["Algorithm", 123456.0]) == "Algorithm123456.0"


def test_markdown_table_takes_columns_or_header_strings():
    assert markdown_table([Column("a", fmt="{:+.1f}"), "b"], [(1.25, "x"), (-2.0, 3)]) == [
        "| a | b |", "|---|---|", "| +1.2 | x |", "| -2.0 | 3 |"]
    assert markdown_table(["only"], []) == ["| only |", "|---|"]
