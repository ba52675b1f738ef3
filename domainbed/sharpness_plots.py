"""`sharpness --plot DIR`: the loss around each measured run, one figure per dataset.

Each figure has one panel per algorithm, side by side on a shared y axis, so flatness is
compared by eye without a legend: thin lines are the runs' curves (one per run and random
filter-normalised direction, `sharpness.loss_landscape`), the bold line their mean, the dot
at α = 0 the runs' mean training loss. With `--slice`, a second figure per dataset holds
each algorithm's mean 2-D slice as filled contours on shared levels.
"""
import collections
import os
import re

from domainbed.results import plots


def _by_dataset_and_algorithm(results):
    grouped = collections.defaultdict(lambda: collections.defaultdict(list))
    for result in results:
        if "landscape" in result:
            grouped[result["dataset"]][result["algorithm"]].append(result)
    return grouped


def _mean(rows):
    return [sum(column) / len(column) for column in zip(*rows)]


def _file_name(dataset, kind):
    return f"{re.sub(r'[^A-Za-z0-9]+', '_', dataset).strip('_')}_loss_{kind}.png"


def curves_figure(dataset, by_algorithm):
    """The 1-D figure of one dataset: {algorithm: [results]} in the order given."""
    plt = plots.require_matplotlib()
    figure, axes = plots.panel_grid(plt, len(by_algorithm), columns=4)
    for index, (axis, (algorithm, runs)) in enumerate(zip(axes, by_algorithm.items())):
        colour = plots.series_style(index)["color"]
        alphas = runs[0]["landscape"]["alphas"]
        curves = [curve for run in runs for curve in run["landscape"]["curves"]]
        for curve in curves:
            axis.plot(alphas, curve, color=colour, linewidth=0.8, alpha=0.35)
        axis.plot(alphas, _mean(curves), color=colour, linewidth=2.2)
        axis.plot([0.0], [sum(r["loss"] for r in runs) / len(runs)], "o", color="black",
                  markersize=4)
        n_directions = len(runs[0]["landscape"]["curves"])
        axis.set_title(f"{algorithm}\n{len(runs)} runs × {n_directions} directions")
        axis.set_xlabel("α (filter-normalised step)")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("training loss")
    figure.suptitle(f"{dataset}: training loss along random filter-normalised directions\n"
                    f"thin: each run and direction; bold: their mean; dot: the runs' loss",
                    y=1.16)
    return figure


def slice_figure(dataset, by_algorithm):
    """The 2-D figure of one dataset: each algorithm's mean slice, shared contour levels."""
    plt = plots.require_matplotlib()
    slices = {algorithm: [run["landscape"]["slice"] for run in runs
                          if "slice" in run["landscape"]]
              for algorithm, runs in by_algorithm.items()}
    slices = {a: s for a, s in slices.items() if s}
    if not slices:
        return None
    means = {a: [_mean(rows) for rows in zip(*s)] for a, s in slices.items()}
    values = [v for grid in means.values() for row in grid for v in row]
    low, high = min(values), max(values)
    # Geometric levels: the basin's shape near the minimum, where linear levels show one
    # colour, is what the figure is for.
    if 0 < low < high:
        levels = [low * (high / low) ** (i / 14) for i in range(15)]
    else:
        levels = [low + (high - low) * i / 14 for i in range(15)] if high > low else 15
    figure, axes = plots.panel_grid(plt, len(means), columns=4, panel_size=(3.0, 2.8))
    for axis, (algorithm, grid) in zip(axes, means.items()):
        alphas = by_algorithm[algorithm][0]["landscape"]["slice_alphas"]
        filled = axis.contourf(alphas, alphas, grid, levels=levels, cmap="viridis")
        axis.plot([0.0], [0.0], "+", color="white", markersize=8)
        axis.set_title(f"{algorithm} ({len(slices[algorithm])} runs)")
        axis.set_xlabel("α (direction 1)")
        axis.set_aspect("equal")
    axes[0].set_ylabel("β (direction 2)")
    bar = figure.colorbar(filled, ax=axes, label="training loss (mean over runs; "
                          "geometric levels)", shrink=0.9)
    bar.ax.set_yticks(bar.ax.get_yticks()[::2] if len(bar.ax.get_yticks()) > 8 else
                      bar.ax.get_yticks())
    bar.ax.yaxis.set_major_formatter("{x:.3g}")
    figure.suptitle(f"{dataset}: loss on a random 2-D slice (+: the trained weights)", y=1.02)
    return figure


def plot_landscapes(results, out_dir):
    """The figures of every dataset in `results` written into `out_dir`; their paths."""
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for dataset, by_algorithm in sorted(_by_dataset_and_algorithm(results).items()):
        written.append(plots.save_figure(curves_figure(dataset, by_algorithm),
                                         os.path.join(out_dir, _file_name(dataset, "curves"))))
        figure = slice_figure(dataset, by_algorithm)
        if figure is not None:
            written.append(plots.save_figure(figure, os.path.join(
                out_dir, _file_name(dataset, "slice"))))
    return written
