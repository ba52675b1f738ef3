"""Issue 36, item 4: every figure type rendered and checked from the figure object: no
empty axes, the legend outside every data area, a distinct colour and marker per series, a
y-range fitted to the data, an Avg group, the curves as a grid; no chart for an empty
table, a note instead; a space between any two names in the diagnostics' text header."""
import pytest

pytest.importorskip("matplotlib")

from domainbed.results import plots  # noqa: E402
from domainbed.results.tables import Cell, Table  # noqa: E402
from domainbed.studies import iut_diagnostics  # noqa: E402
from domainbed.studies.iut_results import ALGORITHMS, ORACLE  # noqa: E402

SIXTEEN = [f"Method{i}" for i in range(16)]


def accuracy_table(algorithms=SIXTEEN, n_envs=6, method="training-domain validation set"):
    cells = [[Cell.of([0.80 + 0.001 * (i + e), 0.82 + 0.001 * (i + e), 0.81])
              for e in range(n_envs)] for i in range(len(algorithms))]
    return Table(method=method, dataset="RotatedMNIST5k", row_labels=list(algorithms),
                 col_labels=[str(15 * e) for e in range(n_envs)], cells=cells,
                 averages=[81.0] * len(algorithms))


def draw(figure):
    figure.canvas.draw()
    return figure.canvas.get_renderer()


def assert_publishable(figure, n_series):
    """No empty axes; every legend outside every axes' data area; `n_series` legend entries
    of pairwise distinct colour and marker."""
    renderer = draw(figure)
    legends = list(figure.legends) + [a.get_legend() for a in figure.axes if a.get_legend()]
    assert legends, "no legend"
    for axis in figure.axes:
        assert axis.lines or axis.collections or axis.patches, f"empty axes {axis.get_title()}"
        for legend in legends:
            assert not legend.get_window_extent(renderer).overlaps(
                axis.get_window_extent(renderer)), f"legend over {axis.get_title()}"
    styles = {}   # label -> (colour, marker) of the series drawn (errorbar: its data line)
    for axis in figure.axes:
        for handle, label in zip(*axis.get_legend_handles_labels()):
            line = handle[0] if isinstance(handle, tuple) else handle
            if line.get_marker() not in (None, "None", "", "x"):
                styles.setdefault(label, (str(line.get_color()), str(line.get_marker())))
    styles = list(styles.values())
    assert len(styles) == n_series
    assert len({colour for colour, _ in styles}) == n_series
    assert len({marker for _, marker in styles}) == n_series


def test_series_styles_are_distinct_for_sixteen():
    styles = [plots.series_style(i) for i in range(16)]
    assert len({s["color"] for s in styles}) == len({s["marker"] for s in styles}) == 16


def test_table_chart_fits_the_data_has_avg_and_legend_outside():
    figure = plots.table_figure(accuracy_table())
    assert_publishable(figure, 16)
    axis = figure.axes[0]
    bottom, top = axis.get_ylim()
    assert 78 < bottom < 80.9 and 82.5 < top < 86      # fitted to 80.9-82.5, not from 0
    assert [t.get_text() for t in axis.get_xticklabels()][-1] == "Avg"
    assert axis.get_xlabel() and axis.get_ylabel() and "s.e." in axis.get_ylabel()
    assert figure.get_size_inches()[0] < 16


def test_a_table_without_values_has_a_note_not_a_chart(tmp_path):
    empty = accuracy_table(["ERM", "FGMix"], method="leave-one-domain-out cross-validation")
    for row in empty.cells:
        for cell in row:
            cell.mean = cell.err = None
    assert plots.table_figure(empty) is None
    notes = []
    written = plots.plot_tables([empty, accuracy_table(["ERM", "FGMix"])], str(tmp_path), notes)
    assert len(written) == 1 and len(notes) == 1
    assert "leave-one-domain-out" in notes[0] and "--single_test_envs" in notes[0]


def test_curves_are_a_grid_with_one_legend_outside():
    per_env = {env: {name: [(step, 70 + env + i * 0.5 + step / 100) for step in (0, 100, 200)]
                     for i, name in enumerate(SIXTEEN[:14])} for env in range(6)}
    figure = plots.curves_figure("RotatedMNIST5k", per_env, "training-domain validation set",
                                 ["0", "15", "30", "45", "60", "75"], SIXTEEN)
    assert_publishable(figure, 14)
    assert len(figure.axes) == 6
    rows = {round(axis.get_position().y0, 3) for axis in figure.axes}
    assert len(rows) == 2                        # 2 rows x 3 panels, not one long row
    width, height = figure.get_size_inches()
    assert width / height < 3


def test_curves_grid_leaves_no_empty_panel():
    per_env = {env: {"ERM": [(0, 50.0), (10, 60.0)]} for env in range(4)}
    figure = plots.curves_figure("D", per_env, "oracle", None)
    assert len(figure.axes) == 4 and all(axis.lines for axis in figure.axes)


def unit_test_cells():
    """(cells, diagnostics) of the unit-test suite: every method, 2 problems, 2 sizes."""
    methods = ALGORITHMS + [ORACLE]
    cells, diagnostics = {}, {}
    for n_envs in (3, 6):
        for problem in ("Example2", "Example3"):
            for i, method in enumerate(methods):
                cells[(n_envs, problem, method)] = [(seed, 0.3 + 0.01 * i + 0.02 * seed, None)
                                                    for seed in range(3)]
                summary = {"mean": 0.5 + 0.01 * i, "se": 0.02, "std": 0.03, "n": 3}
                diagnostics[(n_envs, problem, method)] = {"w_inv": summary, "away_spu": summary}
    return cells, diagnostics


def test_unit_test_error_figure_has_fourteen_distinct_series():
    from domainbed.studies.iut_results import error_table

    cells, _ = unit_test_cells()
    algorithms = ALGORITHMS + [ORACLE]
    figure = iut_diagnostics.errors_figure(error_table(cells), algorithms)
    assert_publishable(figure, len(algorithms))
    bottom, top = figure.axes[0].get_ylim()
    assert -0.06 < bottom < 0 and 0.5 < top < 0.6   # fitted to what is drawn (0.00-0.53)


def test_unit_test_diagnostics_figure():
    cells, diagnostics = unit_test_cells()
    figure = iut_diagnostics.diagnostics_figure(diagnostics, ALGORITHMS + [ORACLE])
    assert_publishable(figure, len(ALGORITHMS) + 1)


def test_weight_table_header_separates_long_names():
    _, diagnostics = unit_test_cells()
    header = iut_diagnostics.format_weight_table(diagnostics).splitlines()[1]
    tokens = header.split()
    assert tokens.index("ExtrapMix2") == tokens.index("AntiGMix") + 1   # each its own column
    assert "AntiGMixExtrapMix2" not in header
