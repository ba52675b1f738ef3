"""collect_results --plot: bar charts of the tables, and training curves of the runs the
selection methods select (matplotlib, imported only when plotting; torch-free)."""
import collections
import os
import re

from domainbed.lib import safe_write
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


def save_figure(figure, path):
    """Lay out, write (PNG, 100 dpi) and close `figure`; returns `path`. Every plot of the
    package is saved here."""
    figure.tight_layout()
    with safe_write.open_file(path, "wb") as f:   # the write rule: never through a link
        figure.savefig(f, format="png", dpi=100)
    require_matplotlib().close(figure)
    return path


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
    save_figure(figure, path)


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


# ---------------------------------------------------------------------------------------
# Training curves of the selected runs

def curve_data(selected):
    """{dataset: {test_env: {algorithm: [(step, mean test accuracy in %)]}}} from
    `selected` (`model_selection.selected_runs(records, method)`): each selected run's
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


def plot_curves(curves, method_name, environments_of, out_dir, algorithm_order=()):
    """One PNG per dataset: a panel per test environment, a line per algorithm (the
    `curve_data` of one selection method). Returns the paths written."""
    plt = require_matplotlib()
    os.makedirs(out_dir, exist_ok=True)
    rank = {name: i for i, name in enumerate(algorithm_order)}
    written = []
    for dataset, per_env in curves.items():
        names = environments_of(dataset)
        envs = sorted(per_env)
        figure, axes = plt.subplots(1, len(envs), figsize=(3.2 * len(envs) + 1, 3.2),
                                    squeeze=False, sharey=True)
        for axis, test_env in zip(axes[0], envs):
            lines = sorted(per_env[test_env].items(), key=lambda item: (
                rank.get(item[0], len(rank)), item[0]))
            for algorithm, points in lines:
                axis.plot([p[0] for p in points], [p[1] for p in points], marker=".",
                          label=algorithm)
            label = names[test_env] if names and test_env < len(names) else test_env
            axis.set_title(f"test env {label}", fontsize=9)
            axis.set_xlabel("step")
        axes[0][0].set_ylabel("test-domain accuracy (%)")
        axes[0][-1].legend(fontsize=7)
        figure.suptitle(f"{dataset}: runs selected by {method_name}", fontsize=9)
        written.append(save_figure(
            figure, os.path.join(out_dir, f"{dataset}_{_slug(method_name)}_curves.png")))
    return written
