"""The invariance unit-test suite: selection and tables on known cells, diagnostics on
hand-made models, and a tiny end-to-end run through the pool launcher."""
import json
import math

import numpy as np
import pytest
import torch

from domainbed.algorithms import get_algorithm_class
from domainbed.datasets.iut import IUTExample2, IUTExample2s
from domainbed import hparams_registry
from domainbed.studies import iut_diagnostics, iut_suite


def test_paired_differences_pair_by_cell():
    cells = {
        (3, "Example2", "ERM"): [(0, 0.40, None), (1, 0.50, None)],
        (3, "Example2", "FGMix"): [(0, 0.30, None), (1, 0.55, None)],
        (3, "Example3", "FGMix"): [(0, 0.10, None)],   # no ERM to pair with: ignored
    }
    paired = iut_suite.paired_differences(cells)
    assert paired["FGMix"]["n"] == 2 and paired["FGMix"]["lower"] == 1
    assert paired["FGMix"]["mean"] == pytest.approx(-0.025)
    table = iut_suite.error_table(cells)
    assert list(table) == [(3, "Example2"), (3, "Example3")]
    assert table[(3, "Example2")]["ERM"]["mean"] == pytest.approx(0.45)
    assert table[(3, "Example2")]["ERM"]["se"] == pytest.approx(0.05)
    text = iut_suite.format_error_table(table)
    assert "published" in text and "0.42+/-0.01" in text  # the ERM anchor of 3 envs/Example2


def test_sweep_specs_add_the_oracle_per_number_of_environments():
    args = iut_suite.parse_args(["--iut_n_envs", "3", "6"])
    specs = iut_suite.sweep_specs(args)
    assert [json.loads(h) for _, h in specs] == [
        {"iut_n_envs": 3}, {"iut_n_envs": 3, "iut_oracle": True},
        {"iut_n_envs": 6}, {"iut_n_envs": 6, "iut_oracle": True}]
    assert specs[1][0] == ["ERM"] and specs[0][0] == iut_suite.ALGORITHMS


def linear_model(dataset, direction):
    hparams = hparams_registry.default_hparams("ERM", type(dataset).__name__)
    model = get_algorithm_class("ERM")(dataset.input_shape, 2, 3, hparams)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.weight[1] = torch.as_tensor(direction, dtype=torch.float32)
    return model


@pytest.mark.parametrize("cls", [IUTExample2, IUTExample2s])
def test_weight_share_is_measured_in_the_unscrambled_basis(cls):
    dataset = cls(None, [3], {"iut_n_samples": 20}, trial_seed=1)
    invariant_only = np.r_[np.ones(5), np.zeros(5)]
    # The network sees x' = x Q: a model using only x_inv has weights Qᵀ w in its basis.
    model = linear_model(dataset, dataset.scramble.T @ invariant_only)
    assert iut_diagnostics.weight_share(model, dataset.scramble, 5) == pytest.approx(1.0)
    model = linear_model(dataset, dataset.scramble.T @ (1 - invariant_only))
    assert iut_diagnostics.weight_share(model, dataset.scramble, 5) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("name", ["FGMixV1", "FGMix"])
def test_fgmix_metric_starts_even_and_compatibility_groups_by_background(name):
    dataset = IUTExample2(None, [3], {"iut_n_samples": 600}, trial_seed=0)
    hparams = hparams_registry.default_hparams(name, "IUTExample2")
    model = get_algorithm_class(name)(dataset.input_shape, 2, 3, hparams)
    assert iut_diagnostics.metric_share(model, dataset.scramble, 5) == pytest.approx(0.5)
    measured = iut_diagnostics.mixing_diagnostics(model, dataset, 5)
    # Head gradients r x are dominated by the 100x stronger background: instances whose
    # background disagrees with their animal are incompatible with the rest of their group.
    assert measured["minority"] < -0.5
    assert 0 <= measured["away_spu"] <= 1 and 0 <= measured["extrap"] <= 1


def test_rank_correlation():
    assert iut_diagnostics.rank_correlation([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert iut_diagnostics.rank_correlation([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(iut_diagnostics.rank_correlation([1, 1, 1], [1, 2, 3]))


def test_tiny_suite_end_to_end(tmp_path, capfd):
    argv = ["--output_dir", str(tmp_path), "--iut_problems", "IUTExample2",
            "--iut_n_envs", "2", "--iut_algorithms", "ERM", "FGMix", "--iut_n_hparams", "1",
            "--iut_n_trials", "2", "--iut_steps", "5",
            "--iut_hparams", '{"iut_n_samples": 100}']
    summary = iut_suite.main(argv)
    out = capfd.readouterr().out
    assert "Invariance unit tests: test error" in out and "Mixing diagnostics" in out
    assert set(summary["errors"]["2/Example2"]) == {"ERM", "FGMix", "Oracle"}
    assert summary["errors"]["2/Example2"]["FGMix"]["n"] == 2
    assert "m_inv" in summary["diagnostics"]["2/Example2/FGMix"]
    assert "w_inv" in summary["diagnostics"]["2/Example2/Oracle"]
    assert (tmp_path / "iut_errors.png").exists() and (tmp_path / "iut_diagnostics.png").exists()
    iut_suite.main(argv)  # again: every job reused
    assert "About to launch 0 jobs." in capfd.readouterr().out
