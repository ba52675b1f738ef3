"""The published DomainBed results (README tables, commit 7df6f06, 2020-10-06) and the
comparison of our tables with them (`collect_results --compare_upstream`), torch-free.

The numbers are data, not code: `published_2020.csv` beside this module (package data),
one row per cell: selection method, table (a dataset or 'Averages'), algorithm, column (an
environment, a dataset, or 'Avg'), mean and standard error in % (none for Avg), as
transcribed from the interface document, section 10. `load_published()` reads and checks
it into `PUBLISHED`: {(selection method, table): {'columns': names, 'rows': {algorithm:
((mean, err) per column, Avg)}}}.

Setup of those runs (differences from ours are listed in the notes below): 3 trials, 20
hparams (seed 0 = defaults), 5001 steps, holdout 0.2, torchvision ResNet-50 with frozen BN on
the image datasets, the old sequential hparam RNG, bicubic RotatedMNIST, Mixup alpha 0.1 for
random hparams.
"""
import csv
import io
import math
from importlib import resources

DATA_FILE = "published_2020.csv"
FIELDS = ["selection_method", "table", "algorithm", "column", "mean", "stderr"]
AVG = "Avg"


def _number(text, where):
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"{where}: {text!r} is not a number")
    return value


def parse_published(text, name=DATA_FILE):
    """PUBLISHED's mapping from the CSV `text`; a ValueError names the line of a cell that
    does not parse, or of a row whose columns differ from its table's first row's."""
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames != FIELDS:
        raise ValueError(f"{name}: the header must be {','.join(FIELDS)}")
    cells = {}   # (method, table) -> {algorithm: [(column, mean, err)]}
    for row in reader:
        where = f"{name}, line {reader.line_num}"
        if None in row or None in row.values():
            raise ValueError(f"{where}: {len(FIELDS)} fields expected")
        mean = _number(row["mean"], where)
        err = None if row["column"] == AVG else _number(row["stderr"], where)
        if row["column"] == AVG and row["stderr"]:
            raise ValueError(f"{where}: the Avg column has no standard error")
        table = cells.setdefault((row["selection_method"], row["table"]), {})
        table.setdefault(row["algorithm"], []).append((row["column"], mean, err, where))
    published = {}
    for key, rows in cells.items():
        first = list(rows.values())[0]
        columns = tuple(column for column, *_ in first[:-1])
        entry = published[key] = {"columns": columns, "rows": {}}
        for algorithm, row in rows.items():
            if tuple(column for column, *_ in row) != columns + (AVG,):
                raise ValueError(f"{row[-1][3]}: {key[0]}, {key[1]} / {algorithm} has columns "
                                 f"{[c for c, *_ in row]}, not {list(columns) + [AVG]}")
            entry["rows"][algorithm] = (tuple((mean, err) for _, mean, err, _ in row[:-1]),
                                        row[-1][1])
    return published


def load_published():
    """PUBLISHED, read from the package's data file."""
    text = resources.files(__package__).joinpath(DATA_FILE).read_text(encoding="utf-8")
    return parse_published(text)


PUBLISHED = load_published()

AVERAGES = "Averages"

# Datasets whose published runs used another data pipeline than ours.
DATASET_NOTES = {
    "RotatedMNIST": "published with bicubic rotation (ours: bilinear, as upstream HEAD)",
}
# Algorithms whose published random hparams came from another distribution than ours.
ALGORITHM_NOTES = {
    "Mixup": "published random mixup_alpha was 0.1 (10^U(-1,-1)); ours 10^U(-1,1)",
}
RANDOM_HPARAMS_NOTE = "published random hparams came from the old sequential RNG (different draws)"
STEPS_NOTE = "published runs trained 5001 steps with holdout 0.2"
BACKBONE_NOTE = "published image runs used torchvision ResNet-50 (ours: resnet50_augmix or other hparams)"
SMALL_IMAGE_DATASETS = ("ColoredMNIST", "RotatedMNIST")


def published(method, table, algorithm):
    """((mean, err) per column, avg) for (method, dataset or AVERAGES, algorithm), or None."""
    entry = PUBLISHED.get((method, table))
    if entry is None:
        return None
    row = entry["rows"].get(algorithm)
    if row is None:
        return None
    return dict(zip(entry["columns"], row[0])), row[1]


def protocol_differences(dataset, algorithm, records):
    """Why our runs of (dataset, algorithm) are not the published protocol ([] = same).

    `records` are the records behind the cell; their args and hparams show what was run.
    """
    notes = []
    if dataset in DATASET_NOTES:
        notes.append(DATASET_NOTES[dataset])
    random_hparams = any(r["args"].get("hparams_seed", 0) != 0 for r in records)
    if random_hparams and algorithm in ALGORITHM_NOTES:
        notes.append(ALGORITHM_NOTES[algorithm])
    if random_hparams:
        notes.append(RANDOM_HPARAMS_NOTE)
    if any(r["args"].get("steps") not in (None, 0, 5001)
           or r["args"].get("holdout_fraction", 0.2) != 0.2 for r in records):
        notes.append(STEPS_NOTE)
    if dataset not in SMALL_IMAGE_DATASETS and any(
            r.get("hparams", {}).get("resnet50_augmix") or r.get("hparams", {}).get("resnet18")
            for r in records):
        notes.append(BACKBONE_NOTE)
    return notes


class UpstreamComparison:
    """Cell suffixes ' (+0.3*)' comparing our table cells with the published ones.

    The delta is ours minus published (in accuracy points); '*' marks cells whose runs differ
    from the published protocol (see protocol_differences); '(n/a)' means no published number
    (new algorithms and datasets, or an empty cell of ours).
    """

    def __init__(self, records):
        self.records_by_cell = {}
        for record in records:
            key = (record["args"]["dataset"], record["args"]["algorithm"])
            self.records_by_cell.setdefault(key, []).append(record)

    def notes(self, table, algorithm, column):
        """Protocol differences behind one cell of `table` (a `tables.Table`)."""
        if table.dataset is not None:
            datasets = [table.dataset]
        elif column == "Avg":
            datasets = table.col_labels
        else:
            datasets = [column]
        notes = []
        for dataset in datasets:
            records = self.records_by_cell.get((dataset, algorithm), [])
            for note in protocol_differences(dataset, algorithm, records):
                if note not in notes:
                    notes.append(note)
        return notes

    def published_value(self, table, algorithm, column):
        entry = published(table.method, table.dataset or AVERAGES, algorithm)
        if entry is None:
            return None
        columns, average = entry
        if column == "Avg":
            return average if set(columns) == set(table.col_labels) else None
        return columns[column][0] if column in columns else None

    def delta_text(self, table, algorithm, column, ours):
        reference = self.published_value(table, algorithm, column)
        if reference is None or ours is None:
            return " (n/a)"
        mark = "*" if self.notes(table, algorithm, column) else ""
        return " ({:+.1f}{})".format(ours - reference, mark)

    def legend_lines(self, table):
        notes = []
        for algorithm in table.row_labels:
            for column in [*table.col_labels, "Avg"]:
                if self.published_value(table, algorithm, column) is None:
                    continue
                notes += [n for n in self.notes(table, algorithm, column) if n not in notes]
        lines = ["(delta) = ours minus published 2020 (7df6f06); (n/a) = no published number"]
        if notes:
            lines.append("* = protocol differs from the published runs: " + "; ".join(notes))
        return lines

    def print_legend(self, table, latex=False):
        for line in self.legend_lines(table):
            print(("% " if latex else "") + line)
