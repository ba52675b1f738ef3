"""collect_results' notes on stderr, never part of the tables (torch-free): lines skipped,
jobs left out, completeness per dataset and algorithm, and why a cell is 'X'."""
import sys

from domainbed.results.records import completeness


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


def print_missing_cell_notes(records, results):
    """One stderr line per (method, dataset, algorithm) whose table row has an 'X'."""
    for table in results.all_tables():
        if table.dataset is None:
            continue
        for algorithm, row in zip(table.row_labels, table.cells):
            if any(cell.mean is None for cell in row):
                reason = missing_cell_reasons(records, table.method, table.dataset, algorithm)
                warn(f"note: {table.method}, {table.dataset} / {algorithm} has 'X' cells: "
                     f"{reason}")
