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
unless --completed_only. The tables are built once (`domainbed.results.build`) and rendered
by `domainbed.results.tables`.
"""
import argparse
import os
import re
import sys

from domainbed import algorithms, model_selection, results
from domainbed.lib import misc, reporting
from domainbed.lib.cli import OneLineErrorParser, one_line_errors, squeeze
from domainbed.lib.progress import progress
from domainbed.lib.reporting import format_mean, print_table  # noqa: F401  (upstream's import paths)
from domainbed.results import metrics

FORMATS = reporting.FORMATS
RESULTS_FILE = {"text": "results.txt", "latex": "results.tex", "markdown": "results.md",
                "csv": "results.csv", "json": "results.json"}


# ---------------------------------------------------------------------------------------
# Main

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
    parser.add_argument("--metric", choices=metrics.METRICS, default="acc",
                        help="ours: report this metric instead of accuracy (records of runs "
                             "trained with --metrics all); the runs are still selected on "
                             "accuracy unless --select_by metric")
    parser.add_argument("--select_by", choices=metrics.SELECT_BY, default="acc",
                        help="what the selection methods choose on: accuracy (default) or "
                             "the --metric")
    parser.add_argument("--plot", metavar="DIR", default=None,
                        help="also write per-dataset PNG bar charts and the selected runs' "
                             "training curves into DIR (needs matplotlib)")
    args = parser.parse_args(argv)
    if args.latex and args.format not in (None, "latex"):
        parser.error("--latex and --format {} contradict each other: keep one".format(args.format))
    args.format = "latex" if args.latex else (args.format or "text")
    if args.metric != "acc" and args.auto_lr:
        parser.error("--auto_lr selects on the auto-lr accuracy: leave out --metric")
    if args.metric != "acc" and args.compare_upstream:
        parser.error("--compare_upstream compares accuracies with the published ones: leave "
                     "out --metric")
    if not os.path.isdir(args.input_dir):
        parser.error(f"--input_dir {args.input_dir!r} is not a directory: give the sweep's "
                     "--output_dir")
    out_path = os.path.join(args.input_dir, RESULTS_FILE[args.format])
    if os.path.lexists(out_path) and not os.path.isfile(out_path):
        parser.error(f"{out_path} exists and is not a regular file; move it away")
    return args


def metric_label(args):
    """(metric, what runs are selected on) when the tables are not accuracies, else None."""
    if args.metric == "acc":
        return None
    return args.metric, "acc" if args.select_by == "acc" else args.metric


def selection_methods(auto_lr):
    if auto_lr:
        return [model_selection.IIDAutoLRAccuracySelectionMethod]
    return model_selection.SELECTION_METHODS


def load(args):
    try:
        report = reporting.load_sweep(args.input_dir, args.completed_only,
                                      lambda entries: progress(entries, ncols=80))
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
        from domainbed.results import plots
        plots.require_matplotlib()
    report = load(args)
    try:
        records = metrics.metric_view(report.records, args.metric, args.select_by)
    except metrics.MetricMissing as error:
        fail(str(error))
    methods = selection_methods(args.auto_lr)
    environments = results.EnvironmentNames(records)
    tables = results.build(records, methods, environments)
    comparison = None
    if args.compare_upstream:
        from domainbed.results.published import UpstreamComparison
        comparison = UpstreamComparison(report.records)
    out_path = os.path.join(args.input_dir, RESULTS_FILE[args.format])
    with redirect_stdout_tee(out_path):
        if args.metric != "acc" and args.format in ("text", "markdown", "latex"):
            print(metrics.header(args.metric, args.select_by))
        reporting.render(tables, args.format, comparison, metric_label(args))
    reporting.print_missing_cell_notes(records, tables)
    if args.plot:
        notes = []   # why a table has no chart (e.g. leave-one-domain-out, single test envs)
        written = plots.plot_tables(tables.all_tables(), args.plot, notes)
        for note in notes:
            print(f"collect_results: {note}", file=sys.stderr)
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
        self.writer = ReplacingWriter(self.tee)
        sys.stdout = self.writer
        return self.tee

    def __exit__(self, *exc):
        sys.stdout = self.tee.stdout
        self.tee.close()
        if self.writer.replaced:
            print(f"collect_results: note: {self.writer.replaced} characters that cannot be "
                  f"written as UTF-8 (e.g. lone surrogates in record names such as "
                  f"{self.writer.example}) were written as '?' in the tables and in "
                  f"{self.path}; --format json keeps them escaped", file=sys.stderr)
        return False


class ReplacingWriter:
    """A text stream in front of `stream` that writes what UTF-8 cannot encode (lone
    surrogates, e.g. from a JSON escape in a record's name) as '?', and counts it."""

    def __init__(self, stream):
        self.stream = stream
        self.replaced = 0
        self.example = None

    def write(self, text):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            bad = [c for c in text if 0xD800 <= ord(c) <= 0xDFFF]
            self.replaced += len(bad) or 1
            if self.example is None:
                word = re.search("[\\w+.\ud800-\udfff-]*[\ud800-\udfff][\\w+.\ud800-\udfff-]*",
                                 text)
                self.example = ascii(word.group(0) if word else text.strip())
            text = text.encode("utf-8", "replace").decode("utf-8")
        return self.stream.write(text)

    def flush(self):
        self.stream.flush()

    def isatty(self):
        return self.stream.isatty()

    def __getattr__(self, name):
        return getattr(self.stream, name)


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
