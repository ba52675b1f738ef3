"""Sweep directories in, records and groups out (torch-free).

* `load_records(path)`: every `*/results.jsonl` one level below `path`, as upstream. Unlike
  upstream, a line that is not a usable record is skipped and counted instead of aborting
  the run (`load_sweep` returns the counts, and can leave out jobs without `done`): torn,
  not UTF-8, not a JSON object, args missing or of the wrong type (test_envs not a list of
  environment indices), accuracies that are not finite numbers, test envs without their
  accuracies. A results.jsonl that is not a regular file (a FIFO) is skipped, never opened.
* `get_grouped_records(records)`: one group per (trial_seed, dataset, algorithm, test_env).
* `scored_groups(records, method)`: the groups a selection method scores, with `sweep_acc`.
"""
import collections
import math
import numbers
import os
import re
from dataclasses import dataclass, field

from domainbed.lib import jobdir
from domainbed.results.query import Q

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


def scored_groups(records, selection_method):
    """The groups that the method can score, each with its 'sweep_acc'."""
    return (get_grouped_records(records)
            .map(lambda group: {**group, "sweep_acc": selection_method.sweep_acc(group["records"])})
            .filter(lambda group: group["sweep_acc"] is not None))
