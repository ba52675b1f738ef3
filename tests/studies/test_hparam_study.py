"""hparam_study: variants paired with ERM cell by cell, selected by training-domain validation."""
import json
import os

import pytest

from domainbed.results.records import load_sweep
from domainbed.studies import hparam_study


def write_job(root, name, algorithm, hparams, test_env, trial, accs):
    """A finished job on a 3-environment dataset; accs: [(step, val_acc, test_acc)]."""
    job = os.path.join(root, name)
    os.makedirs(job)
    with open(os.path.join(job, "results.jsonl"), "w") as f:
        for step, val, test in accs:
            record = {"args": {"dataset": "RotatedMNIST5k", "algorithm": algorithm,
                               "test_envs": [test_env], "trial_seed": trial, "hparams_seed": 0,
                               "hparams": hparams},
                      "hparams": {}, "step": step}
            for env in range(3):
                record[f"env{env}_in_acc"] = test if env == test_env else 0.5
                record[f"env{env}_out_acc"] = 0.5 if env == test_env else val
            f.write(json.dumps(record) + "\n")
    open(os.path.join(job, "done"), "w").close()


def test_variants_are_paired_with_erm_and_selected_on_training_domain_validation(tmp_path):
    root = str(tmp_path / "sweep")
    for trial in range(2):
        write_job(root, f"erm{trial}", "ERM", "", 0, trial, [(0, 0.5, 0.70), (10, 0.9, 0.80)])
    # trial 0: the best checkpoint by validation is step 0 (test 0.83, not the later 0.99)
    write_job(root, "v0", "FGMix", '{"fgmix_gamma": 0.3}', 0, 0, [(0, 0.9, 0.83), (10, 0.6, 0.99)])
    write_job(root, "v1", "FGMix", '{"fgmix_gamma": 0.3}', 0, 1, [(0, 0.5, 0.60), (10, 0.9, 0.78)])
    os.makedirs(os.path.join(root, "unfinished"))   # no records, no done: ignored
    rows = hparam_study.paired_rows(list(load_sweep(root, True).records))
    assert len(rows) == 1
    variant, dataset, n, acc, diff, se, wins = rows[0]
    assert variant == 'FGMix {"fgmix_gamma": 0.3}' and dataset == "RotatedMNIST5k" and n == 2
    assert acc == pytest.approx(80.5) and diff == pytest.approx(0.5) and wins == 1
    assert se == pytest.approx(2.5)
    # Reading only the first checkpoint changes the selection: trial 1 is then 0.60 vs 0.70.
    early = hparam_study.paired_rows(
        list(load_sweep(root, True).records), max_step=0)
    assert early[0][4] == pytest.approx(((0.83 - 0.70) + (0.60 - 0.70)) * 100 / 2)


def test_no_reference_runs_is_a_one_line_error(tmp_path, capsys):
    root = str(tmp_path / "sweep")
    write_job(root, "v0", "FGMix", '{"fgmix_gamma": 0.3}', 0, 0, [(0, 0.9, 0.83)])
    with pytest.raises(SystemExit) as exit_info:
        hparam_study.main(["--input_dir", root])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--reference_dir" in err
