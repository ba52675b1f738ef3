"""Reading results: records in, selected accuracies, tables and comparisons out (torch-free).

    report = records.load_sweep(sweep_dir)          # records, skipped lines, jobs
    results = build(report.records)                 # every table, once, in upstream's order
    tables.render(results, "text")                  # or latex, markdown, csv, json

One module per concern:

* `records`: loading `results.jsonl` files (tolerant of corrupt lines), job completeness,
  grouping by (trial, dataset, algorithm, test env), the groups a selection method scores.
* `query`: `Q`, upstream's record query language.
* `selection`: the model-selection methods, `selected_runs`, `selected_accuracies`.
* `tables`: `Results` of `Table`s of `Cell`s (numbers), built once, and every rendering of
  them (upstream's text and LaTeX byte for byte, Markdown, CSV, JSON); the studies' own
  tables (`Column`s: `text_table`, `markdown_table`).
* `order`: the registries' order of rows, tables and columns, and `build` with it.
* `paired`: paired differences of two algorithms cell by cell (mean ± s.e., wins), the one
  paired comparison of every study (reproduce, hparam_study, the unit-test suite,
  precision_study).
* `published`: upstream's published 2020 numbers (data: `published_2020.csv`) and the
  `--compare_upstream` suffixes.
* `notes`: what collect_results says on stderr.
* `plots`: the figures (matplotlib, optional).

Upstream's import paths stay as aliases: `domainbed.model_selection` (= `selection`),
`domainbed.lib.query` (= `query`), `domainbed.lib.reporting` (its names re-exported); and
the former `domainbed.lib.plots` (= `plots`).
Nothing here imports torch (tests/results/test_collect_results.py, tests/test_architecture.py).
"""
from domainbed.results import notes, paired, query, records, selection, tables  # noqa: F401
from domainbed.results.order import (  # noqa: F401  (the names of the former results.py)
    EnvironmentNames, build, class_environments, registry_order)
