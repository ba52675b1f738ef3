"""Paired comparisons, the one place they are computed (torch-free).

A *cell* is a unit that both sides of a comparison ran under the same conditions: a
(dataset, test env, trial) of a sweep (reproduce, hparam_study, the unit-test suite), or a
job of two sweeps that differ only in `--precision` (precision_study). Every study compares
two algorithms (or settings) the same way:

    result = paired(cells, "FGMix", "ERM", scale=100)   # cells: {cell: {name: value}}
    result.mean, result.se, result.wins, result.n        # points, better in wins/n cells

`summarise(values)`: the mean, standard deviation (ddof 1), standard error and count that
the studies report (the spread of a single value is nan).
"""
from dataclasses import dataclass

import numpy as np


def summarise(values):
    """{'mean', 'se', 'std', 'n'} of `values` (not empty): the standard deviation with
    ddof 1 and the standard error std / sqrt(n), both nan for a single value."""
    values = np.asarray(values, dtype=float)
    n = len(values)
    std = float(values.std(ddof=1)) if n > 1 else float("nan")
    se = float(values.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return {"mean": float(values.mean()), "se": se, "std": std, "n": int(n)}


@dataclass(frozen=True)
class Paired:
    """`algorithm` against `reference` over the cells that have both, in the cells' order.

    `differences`: scale * (value - reference value) per cell; `mean`, `se`, `std`, `n`:
    their `summarise`; `wins`: the cells where the algorithm is better (a positive
    difference, or a negative one where lower is better). `values` and `reference_values`:
    each side's value in those cells, times `scale`."""
    algorithm: str
    reference: str
    cells: tuple
    values: tuple
    reference_values: tuple
    differences: tuple
    mean: float
    se: float
    std: float
    n: int
    wins: int

    @property
    def value_mean(self):
        """The algorithm's mean over the paired cells (times `scale`)."""
        return float(np.mean(self.values))

    @property
    def reference_mean(self):
        """The reference's mean over the paired cells (times `scale`)."""
        return float(np.mean(self.reference_values))


def paired(cells, algorithm, reference, scale=1, higher_is_better=True, where=None):
    """`Paired` of `algorithm` - `reference` over the `cells` ({cell key: {name: value}})
    that hold both (and that `where(key)` keeps, when given); None when no cell does.
    `scale`: e.g. 100 for accuracies in [0, 1] compared in points."""
    keys = [key for key, values in cells.items()
            if algorithm in values and reference in values and (where is None or where(key))]
    if not keys:
        return None
    differences = [scale * (cells[key][algorithm] - cells[key][reference]) for key in keys]
    summary = summarise(differences)
    wins = sum((d > 0) if higher_is_better else (d < 0) for d in differences)
    return Paired(algorithm=algorithm, reference=reference, cells=tuple(keys),
                  values=tuple(scale * cells[key][algorithm] for key in keys),
                  reference_values=tuple(scale * cells[key][reference] for key in keys),
                  differences=tuple(differences), mean=summary["mean"], se=summary["se"],
                  std=summary["std"], n=summary["n"], wins=int(wins))
