"""The mechanisms table: read from records, torch-free."""
import pytest

from domainbed.studies import mechanisms


def _record(algorithm, step, extrap, hparams_seed=0, trial=0, **extra):
    values = {"frac_extrapolating": extrap, "min_weight": -0.5 * extrap, "outside_ratio": extrap,
              "policy_entropy": 0.3, "mixed_loss": 0.2, "nll": 0.1}
    values.update(extra)
    return {"args": {"algorithm": algorithm, "dataset": "D", "test_envs": [0],
                     "trial_seed": trial, "hparams_seed": hparams_seed}, "step": step, **values}


def test_rows_average_default_runs_and_mark_what_is_not_logged():
    records = [_record("GMix2", 0, 0.0), _record("GMix2", 10, 0.8), _record("GMix2", 20, 1.0),
               _record("GMix2", 0, 0.0, trial=1), _record("GMix2", 10, 0.6, trial=1),
               _record("GMix2", 20, 0.9, trial=1),
               _record("GMix2", 20, 0.0, hparams_seed=1),        # not a default run
               {"args": {"algorithm": "ERM", "dataset": "D", "test_envs": [0], "trial_seed": 0,
                         "hparams_seed": 0}, "step": 0, "nll": 0.1},  # not of the family
               _record("FGMix", 0, 0.0, meta_nll_ratio=1.1, policy_kl_fixed=0.0),
               _record("FGMix", 10, 1.0, meta_nll_ratio=1.3, policy_kl_fixed=0.02)]
    rows = {name: (n, values) for name, n, values in
            mechanisms.mechanism_rows(records, order=["FGMix", "GMix2"])}
    assert list(rows) == ["FGMix", "GMix2"]
    n, values = rows["GMix2"]
    assert n == 2
    assert values["extrap_min"] == pytest.approx(0.7)      # min after the first, averaged
    assert values["extrap_last"] == pytest.approx(0.95)
    assert values["mix/nll"] == pytest.approx(2.0)
    assert values["meta/nll"] is None and values["KL_fixed"] is None
    assert rows["FGMix"][1]["meta/nll"] == pytest.approx(1.3)
    text = mechanisms.format_mechanisms(mechanisms.mechanism_rows(records))
    assert "GMix2" in text and "extrap_min" in text
