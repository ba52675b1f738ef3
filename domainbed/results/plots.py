"""collect_results --plot and reproduce's figures: the tables as dot charts, training curves
of the runs the selection methods select, and the shared style of every figure of the
package (matplotlib, imported only when plotting; torch-free).

What makes them figures one can publish (issue 36): no empty figure (a table without a
single value gets a note saying why, not a chart), a y-range fitted to the data with
standard-error bars, an Avg group, labelled axes, the legend outside the data area, a
distinct colour *and* marker for each of up to 16 series, readable font sizes, and curves
of many environments laid out as a grid."""
import collections
import math
import os
import re

from domainbed.errors import EXIT_FAILURE, DomainBedError
from domainbed.lib import safe_write


class MatplotlibMissing(DomainBedError, ImportError):
    """Plotting was asked for and matplotlib is not installed (the message says what to do;
    exit 1)."""

    exit_code = EXIT_FAILURE


# Sizes in points, chosen to stay readable when a figure is shrunk to a column's width.
FONT_SIZES = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9,
              "xtick.labelsize": 8, "ytick.labelsize": 8, "legend.fontsize": 8}
DPI = 150

# 16 series, each with its own colour and its own marker: tab10 and six of Dark2's colours
# (none a lighter shade of another), and 16 filled-shape markers.
COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf", "#000000", "#e6ab02", "#1b9e77", "#7570b3",
           "#a6761d", "#e7298a"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p", "d", "8", "H", "$\u2605$"]


def require_matplotlib():
    """Import matplotlib with a non-interactive backend; MatplotlibMissing without it."""
    try:
        import matplotlib
    except ImportError:
        raise MatplotlibMissing("--plot needs matplotlib: pip install matplotlib (or leave "
                                "out --plot)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.rcParams.update(FONT_SIZES)
    return plt


def series_style(index):
    """The colour and marker of the `index`-th series (distinct for the first 16)."""
    return {"color": COLOURS[index % len(COLOURS)], "marker": MARKERS[index % len(MARKERS)]}


def legend_outside(axis, handles=None, labels=None):
    """The legend to the right of `axis`, outside its data area."""
    if handles is None:
        handles, labels = axis.get_legend_handles_labels()
    if handles:
        axis.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                    borderaxespad=0.0, frameon=False)


def fitted_limits(lows, highs, margin=0.08):
    """(bottom, top) around every value of `lows` and `highs`, with a margin."""
    values = [v for v in list(lows) + list(highs) if v is not None and v == v]
    low, high = min(values), max(values)
    pad = margin * (high - low) if high > low else max(abs(high) * 0.02, 0.5)
    return low - pad, high + pad


def save_figure(figure, path):
    """Lay out, write (PNG) and close `figure`; returns `path`. Every plot of the package
    is saved here, through the write rule (never through a link); the tight bounding box
    keeps an outside legend in the picture."""
    with safe_write.open_file(path, "wb") as f:
        figure.savefig(f, format="png", dpi=DPI, bbox_inches="tight")
    require_matplotlib().close(figure)
    return path


def _slug(text):
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()


# ---------------------------------------------------------------------------------------
# The tables

def empty_table_note(table):
    """Why `table` has no chart, or None when it has a value to draw."""
    if any(cell.mean is not None for row in table.cells for cell in row):
        return None
    if "leave-one-domain-out" in table.method:
        why = ("it reads the runs with two test environments, which this sweep does not "
               "have (e.g. --single_test_envs)")
    else:
        why = "no cell has a selected run yet"
    return f"no chart for {table.dataset}, {table.method}: {why}"


def average_with_error(cells):
    """(mean, s.e.) in % of a row's Avg: the per-trial average over environments when every
    environment has the same trials, else (mean of the means, None)."""
    if any(cell.mean is None for cell in cells):
        return None, None
    counts = {len(cell.values) for cell in cells}
    if len(counts) == 1 and counts.pop() > 1:
        per_trial = [100 * sum(values) / len(values) for values in zip(*(c.values for c in cells))]
        mean = sum(per_trial) / len(per_trial)
        variance = sum((v - mean) ** 2 for v in per_trial) / (len(per_trial) - 1)
        return mean, math.sqrt(variance / len(per_trial))
    return sum(cell.mean for cell in cells) / len(cells), None


def table_figure(table):
    """Dots with s.e. bars: a group per environment and an Avg group, a series per
    algorithm, the y-range fitted to the data. None when the table has no value."""
    if empty_table_note(table) is not None:
        return None
    plt = require_matplotlib()
    groups = list(table.col_labels) + ["Avg"]
    n_series = max(len(table.row_labels), 1)
    width = 0.7 / n_series
    figure, axis = plt.subplots(figsize=(max(4.5, 0.9 * len(groups) + 2.5), 3.4))
    lows, highs = [], []
    for i, (algorithm, row) in enumerate(zip(table.row_labels, table.cells)):
        means = [cell.mean for cell in row] + [average_with_error(row)[0]]
        errors = [cell.err for cell in row] + [average_with_error(row)[1]]
        points = [(g + (i - (n_series - 1) / 2) * width, m, e or 0.0)
                  for g, (m, e) in enumerate(zip(means, errors)) if m is not None]
        if not points:
            continue
        x, y, e = zip(*points)
        axis.errorbar(x, y, yerr=e, linestyle="none", capsize=2, markersize=5, label=algorithm,
                      **series_style(i))
        lows += [m - err for _, m, err in points]
        highs += [m + err for _, m, err in points]
    axis.set_ylim(*fitted_limits(lows, highs))
    axis.set_xticks(range(len(groups)))
    axis.set_xticklabels(groups)
    axis.axvline(len(groups) - 1.5, color="grey", linewidth=0.6)   # environments | Avg
    axis.set_xlabel("test environment")
    axis.set_ylabel("test accuracy (%), mean ± s.e.")
    axis.set_title(f"{table.dataset}: {table.method}")
    axis.grid(axis="y", linewidth=0.3)
    legend_outside(axis)
    return figure


def plot_tables(tables, out_dir, notes=None):
    """One PNG per per-dataset table that has a value; returns the paths written. Each
    table without one adds its reason to `notes` (a list) instead of an empty chart."""
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for table in tables:
        if table.dataset is None or not table.row_labels:
            continue
        figure = table_figure(table)
        if figure is None:
            if notes is not None:
                notes.append(empty_table_note(table))
            continue
        path = os.path.join(out_dir, f"{table.dataset}_{_slug(table.method)}.png")
        written.append(save_figure(figure, path))
    return written


# ---------------------------------------------------------------------------------------
# Training curves of the selected runs

def curve_data(selected):
    """{dataset: {test_env: {algorithm: [(step, mean test accuracy in %)]}}} from
    `selected` (`selection.selected_runs(records, method)`): each selected run's
    held-out accuracy (`env{t}_in_acc` of its records with the single test env t) at every
    checkpoint step, averaged over the trials that have a record at that step."""
    by_step = collections.defaultdict(lambda: collections.defaultdict(list))
    for choice in selected:
        test_env = choice["test_env"]
        key = (choice["dataset"], test_env, choice["algorithm"])
        for record in choice["records"]:
            if record["args"]["test_envs"] == [test_env]:
                by_step[key][record["step"]].append(100.0 * record[f"env{test_env}_in_acc"])
    curves = {}
    for (dataset, test_env, algorithm), steps in sorted(by_step.items()):
        points = [(step, sum(accs) / len(accs)) for step, accs in sorted(steps.items())]
        curves.setdefault(dataset, {}).setdefault(test_env, {})[algorithm] = points
    return curves


def panel_grid(plt, n_panels, columns=3, panel_size=(3.3, 2.6)):
    """(figure, axes list) of `n_panels` panels in rows of `columns`, shared y; the unused
    cells of the last row are removed (no empty axes)."""
    columns = min(columns, n_panels)
    rows = math.ceil(n_panels / columns)
    figure, axes = plt.subplots(rows, columns, squeeze=False, sharey=True,
                                figsize=(panel_size[0] * columns + 1.6, panel_size[1] * rows))
    flat = [axis for row in axes for axis in row]
    for axis in flat[n_panels:]:
        figure.delaxes(axis)
    return figure, flat[:n_panels]


def figure_legend_outside(figure, axes, last=()):
    """One legend for all panels, right of the grid (each label once, in drawing order;
    the labels in `last`, e.g. reference marks, at the end)."""
    entries = {}
    for axis in axes:
        for handle, label in zip(*axis.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    for label in last:
        if label in entries:
            entries[label] = entries.pop(label)
    if entries:
        figure.legend(list(entries.values()), list(entries), loc="center left",
                      bbox_to_anchor=(1.0, 0.5), frameon=False)


def curves_figure(dataset, per_env, method_name, environment_names, algorithm_order=()):
    """A grid of panels, one per test environment, a line per algorithm (a fixed style per
    algorithm across panels)."""
    plt = require_matplotlib()
    rank = {name: i for i, name in enumerate(algorithm_order)}
    order = sorted({a for lines in per_env.values() for a in lines},
                   key=lambda name: (rank.get(name, len(rank)), name))
    envs = sorted(per_env)
    figure, axes = panel_grid(plt, len(envs))
    for axis, test_env in zip(axes, envs):
        for algorithm in order:
            points = per_env[test_env].get(algorithm)
            if points:
                axis.plot([p[0] for p in points], [p[1] for p in points], markersize=3,
                          linewidth=1.2, label=algorithm, **series_style(order.index(algorithm)))
        label = (environment_names[test_env] if environment_names
                 and test_env < len(environment_names) else test_env)
        axis.set_title(f"test env {label}")
        axis.set_xlabel("step")
        axis.grid(linewidth=0.3)
    for axis in axes[::min(3, len(axes))]:
        axis.set_ylabel("test-domain acc. (%)")
    figure.suptitle(f"{dataset}: runs selected by {method_name}")
    figure.tight_layout()
    figure_legend_outside(figure, axes)
    return figure


def plot_curves(curves, method_name, environments_of, out_dir, algorithm_order=()):
    """One PNG per dataset (`curves_figure` of one selection method's `curve_data`).
    Returns the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for dataset, per_env in curves.items():
        figure = curves_figure(dataset, per_env, method_name, environments_of(dataset),
                               algorithm_order)
        written.append(save_figure(
            figure, os.path.join(out_dir, f"{dataset}_{_slug(method_name)}_curves.png")))
    return written
