"""Bar charts of collect_results' tables (matplotlib, imported only when plotting)."""
import os
import re

from domainbed.lib.cli import CommandError


class MatplotlibMissing(CommandError, ImportError):
    """Plotting was asked for and matplotlib is not installed (the message says what to do)."""


def require_matplotlib():
    """Import matplotlib with a non-interactive backend; MatplotlibMissing without it."""
    try:
        import matplotlib
    except ImportError:
        raise MatplotlibMissing("--plot needs matplotlib: pip install matplotlib (or leave "
                                "out --plot)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _slug(text):
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()


def plot_table(table, path):
    """Grouped bars: one group per environment, one bar per algorithm, std-error bars."""
    plt = require_matplotlib()
    n_algorithms = max(len(table.row_labels), 1)
    width = 0.8 / n_algorithms
    figure, axis = plt.subplots(figsize=(max(4, 1.2 * len(table.col_labels) + 2), 3.5))
    for i, (algorithm, row) in enumerate(zip(table.row_labels, table.cells)):
        positions = [env + (i - (n_algorithms - 1) / 2) * width for env in range(len(row))]
        means = [cell.mean if cell.mean is not None else 0.0 for cell in row]
        errors = [cell.err if cell.err is not None else 0.0 for cell in row]
        axis.bar(positions, means, width, yerr=errors, capsize=2, label=algorithm)
    axis.set_xticks(range(len(table.col_labels)))
    axis.set_xticklabels(table.col_labels)
    axis.set_ylabel("test accuracy (%)")
    axis.set_title(f"{table.dataset}: {table.method}", fontsize=9)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_tables(tables, out_dir):
    """One PNG per per-dataset table; returns the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for table in tables:
        if table.dataset is None or not table.row_labels:
            continue
        path = os.path.join(out_dir, f"{table.dataset}_{_slug(table.method)}.png")
        plot_table(table, path)
        written.append(path)
    return written
