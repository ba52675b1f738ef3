"""The mechanisms table: read from records, torch-free."""
import pytest

from domainbed.studies import mechanisms


def _record(algorithm, step, extrap, hparams_seed=0, trial=0, **extra):
    values = {"frac_extrapolating": extrap, "negative_mass": extrap, "negative_mass_std": 0.1,
              "mixed_source_ratio": 2.0, "domain_preference": 0.05}
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
    assert values["extrap"] == pytest.approx(0.95)          # the last record, averaged
    assert values["sd_steps"] == pytest.approx(0.125)   # stds of (0.8, 1.0), (0.6, 0.9): 0.1, 0.15
    assert values["mix/src"] == pytest.approx(2.0)
    assert values["meta/nll"] is None and values["KL_fixed"] is None
    assert values["amount_sd"] is None                      # version 3 only
    assert rows["FGMix"][1]["meta/nll"] == pytest.approx(1.3)
    text = mechanisms.format_mechanisms(mechanisms.mechanism_rows(records))
    assert "GMix2" in text and "sd_groups" in text
