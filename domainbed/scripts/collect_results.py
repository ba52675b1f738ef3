"""Summarise a sweep's results: one table per dataset and selection method, then averages.

    python -m domainbed.scripts.collect_results --input_dir SWEEP_DIR [--latex]

The default text (and --latex) output is byte-identical to upstream DomainBed's, and is also
written to SWEEP_DIR/results.txt (results.tex). Everything this version adds goes to stderr or
behind a flag:
* stderr: skipped corrupt/truncated results.jsonl lines, job completeness per dataset and
  algorithm (done / incomplete), why a table cell is 'X';
* --completed_only: leave out jobs without a `done` file;
* --format markdown|csv|json (written to results.md / .csv / .json);
* --compare_upstream: each cell's difference to the published 2020 number, '*' where the
  published runs used another protocol (a legend under each table says which);
* --plot DIR: PNG bar charts per dataset and selection method, and the training curves
  (held-out accuracy against step, per algorithm) of the runs each method selects (needs
  matplotlib).
Datasets that read their environments from --data_dir (`Folder`) get their column names from
their records' data_dir. Record semantics are upstream's: records of incomplete jobs count
unless --completed_only.
"""
import argparse
import os
import sys

from domainbed import algorithms, datasets
from domainbed.lib import misc, reporting
from domainbed.lib.cli import one_line_errors, squeeze
from domainbed.lib.reporting import format_mean  # noqa: F401  (upstream's import path)
from domainbed import model_selection

FORMATS = ("text", "latex", "markdown", "csv", "json")
RESULTS_FILE = {"text": "results.txt", "latex": "results.tex", "markdown": "results.md",
                "csv": "results.csv", "json": "results.json"}
LATEX_PREAMBLE = ["\\documentclass{article}", "\\usepackage{booktabs}",
                  "\\usepackage{adjustbox}", "\\begin{document}",
                  "\\section{Full DomainBed results}"]


# ---------------------------------------------------------------------------------------
# Upstream's table printer (text and LaTeX)

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


def environments_of(dataset):
    return datasets.get_dataset_class(dataset).ENVIRONMENTS


class EnvironmentNames:
    """`environments_of` for these records: a dataset that reads its environments from
    --data_dir (`Folder`) takes them from its records' data_dir, read here (torch-free), or,
    when that is not readable here, names them env0, env1, ... (notes on stderr, once)."""

    def __init__(self, records):
        self.records = records
        self.names = {}

    def __call__(self, dataset):
        if dataset not in self.names:
            self.names[dataset] = self._names(dataset)
        return self.names[dataset]

    def _names(self, dataset):
        if not datasets.get_dataset_class(dataset).ENVIRONMENTS_FROM_DATA:
            return environments_of(dataset)
        runs = [r for r in self.records if r["args"]["dataset"] == dataset]
        n_envs = 0
        while f"env{n_envs}_out_acc" in runs[0]:
            n_envs += 1
        data_dirs = list(dict.fromkeys(str(r["args"].get("data_dir")) for r in runs))
        if len(data_dirs) > 1:
            reporting.warn(f"warning: the {dataset} records come from {len(data_dirs)} data "
                           f"directories ({', '.join(data_dirs[:3])}); their numbers share "
                           "one table. Collect each dataset's sweep directory on its own")
        try:
            names = datasets.environment_names(dataset, None, data_dirs[0])
        except (datasets.DatasetArgumentError, datasets.DatasetNotFoundError, OSError) as e:
            names, reason = None, " ".join(str(e).split())
        else:
            reason = f"it now has {len(names)} environments, the records {n_envs}"
        if names is None or len(names) != n_envs:
            reporting.warn(f"note: {dataset}'s environments are named env0..env{n_envs - 1}: "
                           f"--data_dir {data_dirs[0]} of its records is not usable here "
                           f"({reason})")
            names = [f"env{i}" for i in range(n_envs)]
        return list(names)


def make_tables(records, selection_method, environments=None):
    return reporting.results_tables(records, selection_method, algorithms.ALGORITHMS,
                                    environments or EnvironmentNames(records),
                                    datasets.DATASETS)


def print_results_tables(records, selection_method, latex):
    """Upstream's API: print every table of one selection method."""
    tables = make_tables(records, selection_method)
    render_text_tables(tables, latex)


# ---------------------------------------------------------------------------------------
# Cell text (with the optional comparison to the published numbers)

class CellFormatter:
    """Turns table cells into strings; with `comparison`, appends the published delta."""

    def __init__(self, mean_format, comparison=None):
        self.mean_format = mean_format
        self.comparison = comparison

    def cell(self, table, row, col):
        cell = table.cells[row][col]
        if cell.mean is None:
            text = "X"
        else:
            text = self.mean_format.format(cell.mean, cell.err)
        return text + self._delta(table, row, table.col_labels[col], cell.mean)

    def average(self, table, row):
        value = table.averages[row]
        text = "X" if value is None else "{:.1f}".format(value)
        return text + self._delta(table, row, "Avg", value)

    def _delta(self, table, row, column, ours):
        if self.comparison is None:
            return ""
        return self.comparison.delta_text(table, table.row_labels[row], column, ours)

    def rows(self, table):
        return [[self.cell(table, r, c) for c in range(len(table.col_labels))]
                + [self.average(table, r)] for r in range(len(table.row_labels))]


TEXT_MEAN = "{:.1f} +/- {:.1f}"
LATEX_MEAN = "{:.1f} $\\pm$ {:.1f}"
MARKDOWN_MEAN = "{:.1f} ± {:.1f}"


def render_text_tables(tables, latex, comparison=None):
    formatter = CellFormatter(LATEX_MEAN if latex else TEXT_MEAN, comparison)
    widen = 12 if comparison else 0   # room for ' (+1.2*)' instead of truncating it
    for table in tables:
        if latex:
            print("")
            print("\\subsubsection{{{}}}".format(table.dataset or "Averages"))
        colwidth = (20 if table.dataset else 25) + widen
        print_table(formatter.rows(table), table.header_text, table.row_labels,
                    ["Algorithm", *table.col_labels, "Avg"], colwidth=colwidth, latex=latex)
        if comparison:
            comparison.print_legend(table, latex)


# ---------------------------------------------------------------------------------------
# Main

class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but an error is one line (no usage block): what went wrong, what to do."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def parse_args(argv=None):
    parser = OneLineErrorParser(
        description="Collect a sweep's results into tables (upstream text by default).")
    parser.add_argument("--input_dir", required=True, help="the sweep's output directory")
    parser.add_argument("--latex", action="store_true", help="same as --format latex")
    parser.add_argument("--auto_lr", action="store_true",
                        help="ERM++ only: use the auto-lr training-domain selection method")
    parser.add_argument("--format", choices=FORMATS, default=None,
                        help="output format (default text; written to input_dir/results.*)")
    parser.add_argument("--completed_only", action="store_true",
                        help="leave out jobs that have no `done` file (counted on stderr)")
    parser.add_argument("--compare_upstream", action="store_true",
                        help="show each cell's difference to the published 2020 numbers")
    parser.add_argument("--plot", metavar="DIR", default=None,
                        help="also write per-dataset PNG bar charts and the selected runs' "
                             "training curves into DIR (needs matplotlib)")
    args = parser.parse_args(argv)
    if args.latex and args.format not in (None, "latex"):
        parser.error("--latex and --format {} contradict each other: keep one".format(args.format))
    args.format = "latex" if args.latex else (args.format or "text")
    if not os.path.isdir(args.input_dir):
        parser.error(f"--input_dir {args.input_dir!r} is not a directory: give the sweep's "
                     "--output_dir")
    out_path = os.path.join(args.input_dir, RESULTS_FILE[args.format])
    if os.path.lexists(out_path) and not os.path.isfile(out_path):
        parser.error(f"{out_path} exists and is not a regular file; move it away")
    return args


def selection_methods(auto_lr):
    if auto_lr:
        return [model_selection.IIDAutoLRAccuracySelectionMethod]
    return model_selection.SELECTION_METHODS


def load(args):
    progress = None
    if sys.stderr.isatty():
        from tqdm import tqdm

        def progress(entries):
            return tqdm(entries, ncols=80, leave=False)
    try:
        report = reporting.load_sweep(args.input_dir, args.completed_only, progress)
    except OSError as error:   # e.g. no permission to list the directory
        fail(f"cannot read --input_dir {args.input_dir} ({error.strerror or error}); give a "
             "readable sweep directory")
    reporting.print_load_notes(report, args.completed_only)
    return report


def fail(message):
    """One line on stderr, exit code 2 (bad input: nothing was written)."""
    print(f"collect_results: error: {message}", file=sys.stderr)
    sys.exit(2)


def main(argv=None):
    args = parse_args(argv)
    if args.plot:
        from domainbed.lib import plots
        plots.require_matplotlib()
    report = load(args)
    records = report.records
    methods = selection_methods(args.auto_lr)
    environments = EnvironmentNames(records)
    tables = {method.name: make_tables(records, method, environments) for method in methods}
    comparison = None
    if args.compare_upstream:
        from domainbed.lib.upstream_results import UpstreamComparison
        comparison = UpstreamComparison(records)
    out_path = os.path.join(args.input_dir, RESULTS_FILE[args.format])
    with redirect_stdout_tee(out_path):
        render(args.format, len(records), methods, tables, comparison)
    reporting.print_missing_cell_notes(records, methods, tables)
    if args.plot:
        written = plots.plot_tables([t for m in methods for t in tables[m.name]], args.plot)
        for method in methods:   # training curves of the runs each method selects
            curves = plots.curve_data(model_selection.selected_runs(records, method))
            written += plots.plot_curves(curves, method.name, environments, args.plot,
                                         algorithms.ALGORITHMS)
        print(f"collect_results: wrote {len(written)} plots to {args.plot}", file=sys.stderr)


class redirect_stdout_tee:
    """Within the block, stdout also goes to `path` (mode 'w'), as upstream's Tee."""

    def __init__(self, path):
        self.path = path

    def __enter__(self):
        if os.path.lexists(self.path) and not os.path.isfile(self.path):
            fail(f"{self.path} exists and is not a regular file; move it away")
        try:
            self.tee = misc.Tee(self.path, "w")
        except OSError as error:
            fail(f"cannot write {self.path}: {error.strerror}. Make the sweep directory "
                 "writable or copy it elsewhere.")
        sys.stdout = self.tee
        return self.tee

    def __exit__(self, *exc):
        sys.stdout = self.tee.stdout
        self.tee.close()
        return False


def render(fmt, n_records, methods, tables, comparison):
    if fmt in ("text", "latex"):
        render_upstream(fmt == "latex", n_records, methods, tables, comparison)
    else:
        from domainbed.lib import results_formats
        results_formats.RENDERERS[fmt](n_records, methods, tables, comparison)


def render_upstream(latex, n_records, methods, tables, comparison):
    if latex:
        for line in LATEX_PREAMBLE:
            print(line)
        print("% Total records: {}".format(n_records))
    else:
        print("Total records:", n_records)
    for method in methods:
        if latex:
            print()
            print("\\subsection{{Model selection: {}}}".format(method.name))
        render_text_tables(tables[method.name], latex, comparison)
    if latex:
        print("\\end{document}")


def describe_failure(error):
    if isinstance(error, OSError):   # e.g. results.txt on a full disk
        where = f" ({error.filename})" if error.filename else ""
        return (f"{error.strerror or error}{where}; free some space or make the sweep "
                "directory writable, then rerun")
    return (f"{type(error).__name__}: {squeeze(error)} (the records may be inconsistent: "
            "rerun with --completed_only, or look at the jobs named above)")


def cli(argv=None):
    """main() with no traceback: an unexpected error is one line, exit code 1."""
    return one_line_errors(main, argv, "collect_results", "interrupted", describe_failure)


if __name__ == "__main__":
    sys.exit(cli())
