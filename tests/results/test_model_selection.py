"""model_selection: upstream's fixtures (interface §9) and the tie-break rules (Appendix A)."""
import pytest

from domainbed import model_selection
from domainbed.lib.query import Q


def record(test_envs, step=0, hparams_seed=0, **accs):
    return {"args": {"test_envs": test_envs, "hparams_seed": hparams_seed}, "step": step, **accs}


class FixedRunAcc(model_selection.SelectionMethod):
    """A stub whose run_acc reads the values stored in the run's first record."""

    @classmethod
    def run_acc(cls, run_records):
        return {"val_acc": run_records[0]["val"], "test_acc": run_records[0]["test"]}


def test_sweep_acc_picks_best_validation():
    records = Q([{"args": {"hparams_seed": 0}, "val": 0.5, "test": 0.6},
                 {"args": {"hparams_seed": 1}, "val": 0.8, "test": 0.7}])
    assert FixedRunAcc.sweep_acc(records) == 0.7
    assert FixedRunAcc.sweep_acc(Q([])) is None


def test_val_tie_goes_to_the_higher_hparams_seed():
    records = Q([{"args": {"hparams_seed": 0}, "val": 0.5, "test": 0.1},
                 {"args": {"hparams_seed": 1}, "val": 0.5, "test": 0.2}])
    assert FixedRunAcc.sweep_acc(records) == 0.2


def test_methods_cannot_be_instantiated():
    with pytest.raises(TypeError):
        model_selection.OracleSelectionMethod()


def test_oracle_takes_the_last_step_even_if_worse():
    records = Q([record([0], step=1, env0_out_acc=0.6, env0_in_acc=0.65),
                 record([0], step=0, env0_out_acc=0.8, env0_in_acc=0.85)])
    assert model_selection.OracleSelectionMethod.run_acc(records) == {"val_acc": 0.6,
                                                                       "test_acc": 0.65}
    assert model_selection.OracleSelectionMethod.run_acc(Q([])) is None


def test_iid_early_stops_on_training_domain_validation():
    records = Q([
        record([0], step=0, env0_in_acc=0.1, env0_out_acc=0.9, env1_out_acc=0.5, env2_out_acc=0.6),
        record([0], step=1, env0_in_acc=0.3, env0_out_acc=0.0, env1_out_acc=0.7, env2_out_acc=0.8),
    ])
    result = model_selection.IIDAccuracySelectionMethod.run_acc(records)
    assert result == {"val_acc": pytest.approx(0.75), "test_acc": 0.3}
    assert model_selection.IIDAccuracySelectionMethod.run_acc(Q([])) is None


def test_iid_ignores_runs_with_two_test_envs():
    records = Q([record([0, 1], env0_in_acc=0.1, env0_out_acc=0.2, env1_out_acc=0.3)])
    assert model_selection.IIDAccuracySelectionMethod.run_acc(records) is None


def test_iid_first_checkpoint_wins_ties():
    records = Q([record([0], step=0, env0_in_acc=0.1, env0_out_acc=0, env1_out_acc=0.5),
                 record([0], step=1, env0_in_acc=0.2, env0_out_acc=0, env1_out_acc=0.5)])
    assert model_selection.IIDAccuracySelectionMethod.run_acc(records)["test_acc"] == 0.1


def loo_records():
    common = dict(env0_out_acc=0.0, env1_out_acc=0.0, env2_out_acc=0.0)
    return Q([
        record([0], env0_in_acc=0.1, env1_in_acc=0.9, env2_in_acc=0.9, **common),
        record([0, 1], env0_in_acc=0.9, env1_in_acc=0.5, env2_in_acc=0.9, **common),
        record([0, 2], env0_in_acc=0.9, env1_in_acc=0.9, env2_in_acc=0.6, **common),
    ])


def test_leave_one_out_uses_the_held_out_domain():
    result = model_selection.LeaveOneOutSelectionMethod.run_acc(loo_records())
    assert result == {"val_acc": pytest.approx(0.55), "test_acc": 0.1}


def test_leave_one_out_needs_every_pair():
    assert model_selection.LeaveOneOutSelectionMethod.run_acc(loo_records()[:2]) is None
    assert model_selection.LeaveOneOutSelectionMethod.run_acc(Q([])) is None


def test_selection_method_names_and_order():
    assert [m.name for m in model_selection.SELECTION_METHODS] == [
        "training-domain validation set", "leave-one-domain-out cross-validation",
        "test-domain validation set (oracle)"]
