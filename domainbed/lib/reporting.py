"""Records in, tables out (torch-free).

* `load_records(path)`: every `*/results.jsonl` one level below `path`, as upstream. Unlike
  upstream, a line that is not a usable record is skipped and counted instead of aborting
  the run (`load_sweep` returns the counts, and can leave out jobs without `done`): torn,
  not UTF-8, not a JSON object, args missing or of the wrong type (test_envs not a list of
  environment indices), accuracies that are not finite numbers, test envs without their
  accuracies. A results.jsonl that is not a regular file (a FIFO) is skipped, never opened.
* `get_grouped_records(records)`: one group per (trial_seed, dataset, algorithm, test_env).
* `results_tables(records, method)`: upstream's per-dataset and averages tables as data
  (`Table`), so text, LaTeX, Markdown, CSV and JSON are renderings of the same numbers.
"""
import collections
import math
import numbers
import os
import re
import sys
from dataclasses import dataclass, field

import numpy as np

from domainbed.lib import jobdir
from domainbed.lib.query import Q

REQUIRED_ARGS = ("dataset", "algorithm", "test_envs", "trial_seed", "hparams_seed")


# ---------------------------------------------------------------------------------------
# Loading

@dataclass
class JobSummary:
    """What one job directory holds, for completeness reports."""
    path: str
    dataset: str = None
    algorithm: str = None
    done: bool = False
    n_records: int = 0


@dataclass
class LoadReport:
    records: Q
    jobs: list = field(default_factory=list)           # JobSummary per directory with records or job.json
    corrupt_lines: list = field(default_factory=list)  # (file, line number)
    unreadable_files: list = field(default_factory=list)  # results.jsonl that are no files
    left_out_incomplete: int = 0                        # jobs dropped by completed_only


_ACC_KEY = re.compile(r"(?:fd_)?env(\d+)_(?:in|out|uda)_acc")


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_finite_number(value):
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(value))


def _usable(record):
    """Whether the selection methods and tables can use `record` without failing."""
    args = record.get("args")
    if not isinstance(args, dict) or any(key not in args for key in REQUIRED_ARGS):
        return False
    if not (isinstance(args["dataset"], str) and isinstance(args["algorithm"], str)
            and _is_int(args["trial_seed"]) and _is_int(args["hparams_seed"])):
        return False
    test_envs = args["test_envs"]
    if (not isinstance(test_envs, list) or not test_envs
            or not all(_is_int(env) and env >= 0 for env in test_envs)
            or len(set(test_envs)) != len(test_envs)):
        return False
    if not _is_finite_number(record.get("step")):
        return False
    for key, value in record.items():
        if _ACC_KEY.fullmatch(key) and not _is_finite_number(value):
            return False
    n_envs = 0
    while f"env{n_envs}_out_acc" in record:
        n_envs += 1
    return all(env < n_envs and f"env{env}_in_acc" in record for env in test_envs)


def parse_record_line(line):
    """The record on one results.jsonl line (str or bytes), or None if it is not a whole,
    usable record (see the module docstring)."""
    record = jobdir.parse_record_bytes(line)
    if record is None or not _usable(record):
        return None
    return record


def _read_job_dir(job_dir, report):
    """Append the job's records to report; return its JobSummary (None if nothing there)."""
    summary = JobSummary(path=job_dir, done=os.path.exists(os.path.join(job_dir, "done")))
    _read_job_identity(job_dir, summary)
    path = os.path.join(job_dir, "results.jsonl")
    records = []
    try:
        lines = jobdir.read_records_file(path)
    except jobdir.NotRegularFileError:
        report.unreadable_files.append(path)
        lines = []
    for line_number, line, _ in lines:
        record = parse_record_line(line)
        if record is None:
            report.corrupt_lines.append((path, line_number))
        else:
            records.append(record)
    if records and summary.dataset is None:
        summary.dataset = records[0]["args"]["dataset"]
        summary.algorithm = records[0]["args"]["algorithm"]
    summary.n_records = len(records)
    if summary.dataset is None:
        return None, records
    return summary, records


def _read_job_identity(job_dir, summary):
    args = jobdir.read_job_args(job_dir)
    if args and isinstance(args.get("dataset"), str) and isinstance(args.get("algorithm"), str):
        summary.dataset, summary.algorithm = args["dataset"], args["algorithm"]


def load_sweep(path, completed_only=False, progress=None):
    """Load every job directory under `path`; see LoadReport."""
    report = LoadReport(records=Q([]))
    entries = os.listdir(path)
    for entry in (progress(entries) if progress else entries):
        summary, records = _read_job_dir(os.path.join(path, entry), report)
        if summary is None:
            continue
        report.jobs.append(summary)
        if completed_only and not summary.done:
            report.left_out_incomplete += 1
            continue
        for record in records:
            report.records._append(record)
    return report


def load_records(path):
    """Upstream's API: the records of every job under `path` (corrupt lines skipped)."""
    return load_sweep(path).records


def completeness(jobs):
    """{(dataset, algorithm): (n_done, n_incomplete)} in first-seen order."""
    counts = collections.OrderedDict()
    for job in jobs:
        done, incomplete = counts.get((job.dataset, job.algorithm), (0, 0))
        counts[(job.dataset, job.algorithm)] = (done + job.done, incomplete + (not job.done))
    return counts


# ---------------------------------------------------------------------------------------
# Grouping

def get_grouped_records(records):
    """[{trial_seed, dataset, algorithm, test_env, records}], a record once per test env."""
    groups = collections.OrderedDict()
    for record in records:
        args = record["args"]
        for test_env in args["test_envs"]:
            key = (args["trial_seed"], args["dataset"], args["algorithm"], test_env)
            groups.setdefault(key, []).append(record)
    return Q([{"trial_seed": t, "dataset": d, "algorithm": a, "test_env": e, "records": Q(rs)}
              for (t, d, a, e), rs in groups.items()])


# ---------------------------------------------------------------------------------------
# Tables

def format_mean(data, latex):
    """(mean, err, text): 100 * mean and 100 * population std / sqrt(n); 'X' when empty."""
    if len(data) == 0:
        return None, None, "X"
    mean = 100 * np.mean(list(data))
    err = 100 * np.std(list(data) / np.sqrt(len(data)))
    if latex:
        return mean, err, "{:.1f} $\\pm$ {:.1f}".format(mean, err)
    return mean, err, "{:.1f} +/- {:.1f}".format(mean, err)


@dataclass
class Cell:
    values: list          # one accuracy in [0, 1] per trial (an average over envs in Averages)
    mean: float = None    # in %, None when there are no values
    err: float = None


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


def make_cell(values):
    mean, err, _ = format_mean(values, latex=False)
    return Cell(values=[float(v) for v in values], mean=mean, err=err)


def _row_average(cells):
    means = [cell.mean for cell in cells]
    if not means or None in means:
        return None
    return sum(means) / len(means)


def algorithm_order(records, known_algorithms):
    """Known algorithms in their registry order, then the others in first-seen order."""
    present = Q(records).select("args.algorithm").unique()
    return ([name for name in known_algorithms if name in present]
            + [name for name in present if name not in known_algorithms])


def dataset_order(records, known_datasets):
    """The datasets of the records that are registered, in registry order (others ignored)."""
    present = set(Q(records).select("args.dataset").unique())
    return [name for name in known_datasets if name in present]


def scored_groups(records, selection_method):
    """The groups that the method can score, each with its 'sweep_acc'."""
    return (get_grouped_records(records)
            .map(lambda group: {**group, "sweep_acc": selection_method.sweep_acc(group["records"])})
            .filter(lambda group: group["sweep_acc"] is not None))


def results_tables(records, selection_method, known_algorithms, environments_of, known_datasets):
    """Upstream's tables for one selection method: one per dataset, then the averages.

    `environments_of(dataset)` gives the environment names; `known_*` give the row/table order.
    """
    groups = scored_groups(records, selection_method)
    algorithms = algorithm_order(records, known_algorithms)
    datasets = dataset_order(records, known_datasets)
    tables = [_dataset_table(groups, selection_method.name, dataset, algorithms,
                             environments_of(dataset)) for dataset in datasets]
    tables.append(_averages_table(groups, selection_method.name, datasets, algorithms))
    return tables


def _dataset_table(groups, method_name, dataset, algorithms, environments):
    cells = []
    for algorithm in algorithms:
        row = []
        for test_env in range(len(environments)):
            accs = groups.filter_equals("dataset, algorithm, test_env",
                                        (dataset, algorithm, test_env)).select("sweep_acc")
            row.append(make_cell(list(accs)))
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
            row.append(make_cell(list(trial_means)))
        cells.append(row)
    return Table(method_name, None, list(algorithms), list(datasets), cells,
                 [_row_average(row) for row in cells])


# ---------------------------------------------------------------------------------------
# Notes for stderr (never part of the tables)

def warn(message):
    print(f"collect_results: {message}", file=sys.stderr)


def print_load_notes(report, completed_only):
    """Corrupt lines, jobs left out, and completeness per dataset and algorithm."""
    if report.unreadable_files:
        warn(f"warning: skipped {len(report.unreadable_files)} results.jsonl that are not "
             f"regular files (first: {report.unreadable_files[0]})")
    if report.corrupt_lines:
        files = sorted({path for path, _ in report.corrupt_lines})
        path, line_number = report.corrupt_lines[0]
        warn(f"warning: skipped {len(report.corrupt_lines)} corrupt or truncated lines in "
             f"{len(files)} results.jsonl files (first: {path}, line {line_number})")
    if completed_only:
        warn(f"--completed_only: left out {report.left_out_incomplete} incomplete jobs "
             "(no `done` file)")
    for (dataset, algorithm), (done, incomplete) in completeness(report.jobs).items():
        warn(f"{dataset} / {algorithm}: {done + incomplete} jobs: {done} done, "
             f"{incomplete} incomplete")


def missing_cell_reasons(records, method_name, dataset, algorithm):
    """Why a selection method gives no number for (dataset, algorithm), in words."""
    runs = [r for r in records if r["args"]["dataset"] == dataset
            and r["args"]["algorithm"] == algorithm]
    n_test_envs = {len(r["args"]["test_envs"]) for r in runs}
    if "leave-one-domain-out" in method_name and 2 not in n_test_envs:
        return ("leave-one-domain-out cross-validation needs the runs with 2 test envs "
                "(a sweep without --single_test_envs); there are none")
    if 1 not in n_test_envs:
        return "no run with a single test env (every selection method needs them)"
    return "some test envs have no run this method can score (missing or incomplete jobs?)"


def print_missing_cell_notes(records, methods, tables):
    """One stderr line per (method, dataset, algorithm) whose table row has an 'X'."""
    for method in methods:
        for table in tables[method.name]:
            if table.dataset is None:
                continue
            for algorithm, row in zip(table.row_labels, table.cells):
                if any(cell.mean is None for cell in row):
                    reason = missing_cell_reasons(records, method.name, table.dataset, algorithm)
                    warn(f"note: {method.name}, {table.dataset} / {algorithm} has 'X' cells: "
                         f"{reason}")
