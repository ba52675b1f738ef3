"""results.paired (the one paired comparison of every study) against hand computations, and
selection.selected_accuracies (the cells it pairs on)."""
import math

import pytest

from domainbed.results import paired, selection
from domainbed.results.query import Q

# Three cells hold both X and R; differences in points +10, -5, +10.
CELLS = {
    ("A", 0, 0): {"X": 0.80, "R": 0.70},
    ("A", 1, 0): {"X": 0.60, "R": 0.65},
    ("B", 0, 0): {"R": 0.50},              # no X: not a pair
    ("B", 1, 0): {"X": 0.90, "R": 0.80, "Y": 0.1},
}


def test_paired_difference_mean_se_and_wins_by_hand():
    result = paired.paired(CELLS, "X", "R", scale=100)
    assert result.cells == (("A", 0, 0), ("A", 1, 0), ("B", 1, 0))
    assert result.differences == pytest.approx((10.0, -5.0, 10.0))
    # mean 5; deviations 5, -10, 5: variance (25 + 100 + 25) / 2 = 75; s.e. sqrt(75 / 3) = 5
    assert result.mean == pytest.approx(5.0)
    assert result.std == pytest.approx(math.sqrt(75))
    assert result.se == pytest.approx(5.0)
    assert (result.wins, result.n) == (2, 3)
    assert result.value_mean == pytest.approx((80 + 60 + 90) / 3)
    assert result.reference_mean == pytest.approx((70 + 65 + 80) / 3)


def test_paired_variants_lower_is_better_unscaled_and_a_subset_of_cells():
    lower = paired.paired(CELLS, "X", "R", higher_is_better=False)
    assert lower.wins == 1 and lower.mean == pytest.approx(0.05)
    in_a = paired.paired(CELLS, "X", "R", scale=100, where=lambda key: key[0] == "A")
    # +10 and -5: mean 2.5, variance 2 * 7.5^2 / 1, s.e. sqrt(112.5 / 2) = 7.5
    assert in_a.n == 2 and in_a.mean == pytest.approx(2.5) and in_a.se == pytest.approx(7.5)


def test_one_pair_has_no_spread_and_no_pair_is_none():
    one = paired.paired(CELLS, "Y", "R", scale=100)
    assert one.n == 1 and one.mean == pytest.approx(-70.0)
    assert math.isnan(one.se) and math.isnan(one.std) and one.wins == 0
    assert paired.paired(CELLS, "X", "Z") is None
    assert paired.paired(CELLS, "X", "R", where=lambda key: key[0] == "C") is None


def test_summarise_by_hand():
    summary = paired.summarise([1.0, 2.0, 3.0, 4.0])
    assert list(summary) == ["mean", "se", "std", "n"]
    assert summary["mean"] == 2.5 and summary["n"] == 4
    assert summary["std"] == pytest.approx(math.sqrt(5 / 3))
    assert summary["se"] == pytest.approx(math.sqrt(5 / 3) / 2)
    single = paired.summarise([0.3])
    assert single["mean"] == 0.3 and math.isnan(single["se"]) and math.isnan(single["std"])


def record(algorithm, test_env, trial, hparams_seed, step, val, test):
    """A record of a 2-environment dataset: `val` on the training env's out-split."""
    other = 1 - test_env
    return {"args": {"dataset": "D", "algorithm": algorithm, "test_envs": [test_env],
                     "trial_seed": trial, "hparams_seed": hparams_seed},
            "step": step, f"env{test_env}_in_acc": test, f"env{test_env}_out_acc": 0.0,
            f"env{other}_in_acc": 0.0, f"env{other}_out_acc": val}


def test_selected_accuracies_are_training_domain_validation_per_cell():
    records = Q([
        record("ERM", 0, 0, 0, 0, val=0.5, test=0.60), record("ERM", 0, 0, 0, 5, val=0.7, test=0.65),
        record("ERM", 0, 0, 1, 0, val=0.9, test=0.80), record("ERM", 0, 0, 1, 5, val=0.1, test=0.99),
        record("Mixup", 0, 0, 0, 5, val=0.5, test=0.70), record("ERM", 1, 1, 0, 5, val=0.5, test=0.4),
    ])
    assert selection.selected_accuracies(records) == {
        ("D", 0, 0): {"ERM": 0.80, "Mixup": 0.70}, ("D", 1, 1): {"ERM": 0.4}}
    # Up to step 0, Mixup has no checkpoint and ERM's hparams_seed 1 still wins.
    assert selection.selected_accuracies(records, max_step=0) == {("D", 0, 0): {"ERM": 0.80}}
    oracle = selection.selected_accuracies(records, selection.OracleSelectionMethod)
    assert oracle[("D", 0, 0)]["ERM"] == 0.99   # ties on val (0.0): the higher hparams_seed
