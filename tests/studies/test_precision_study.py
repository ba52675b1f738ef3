"""`precision_study paired`: bf16 against fp32 sweeps, paired by job (torch-free)."""
import json
import os

import pytest

from domainbed.studies import precision_study


def write_job(sweep, name, algorithm, test_env, trial, accuracies, done=True):
    """A finished job directory with a record at steps 0 and 10 (the last one's
    accuracies given), as train.py writes it."""
    job = sweep / name
    job.mkdir(parents=True)
    args = {"algorithm": algorithm, "dataset": "RotatedMNIST5k", "test_envs": [test_env],
            "trial_seed": trial, "hparams_seed": 0}
    if sweep.name.startswith("bf16"):   # as train.py records a bf16 run (fp32: no key)
        args["precision"] = "bf16"
    with open(job / "results.jsonl", "w") as f:
        for step, (acc_in, acc_out) in ((0, (0.1, 0.1)), (10, accuracies)):
            record = {"step": step, "step_time": 0.01 * (step + 1), "args": args,
                      "hparams": {}}
            for env in range(4):   # records have every environment's accuracies
                record[f"env{env}_in_acc"] = acc_in if env == test_env else 0.5
                record[f"env{env}_out_acc"] = acc_out if env == test_env else 0.5
            f.write(json.dumps(record) + "\n")
    if done:
        (job / "done").write_text("done")


def test_paired_differences_by_job(tmp_path, capsys):
    fp32, bf16 = tmp_path / "fp32", tmp_path / "bf16"
    for trial, (a, b) in enumerate([(0.70, 0.72), (0.80, 0.81)]):
        write_job(fp32, f"e{trial}", "ERM", 1, trial, (a, a))
        write_job(bf16, f"e{trial}", "ERM", 1, trial, (b, a))
    write_job(bf16, "only_bf16", "ERM", 2, 0, (0.9, 0.9))          # unpaired: left out
    write_job(fp32, "unfinished", "ERM", 3, 0, (0.9, 0.9), done=False)
    write_job(bf16, "unfinished", "ERM", 3, 0, (0.1, 0.1), done=False)
    lines = precision_study.paired(str(fp32), str(bf16))
    assert lines[0] == ("ERM: test env in-split accuracy, final step: fp32 75.00%, "
                        "bf16 - fp32 = +1.50 ± 0.50 points (n = 2 pairs)")
    assert lines[1].startswith("ERM: test env out-split accuracy, final step: fp32 75.00%, "
                               "bf16 - fp32 = +0.00 ± 0.00 points (n = 2 pairs)")
    assert lines[2] == "ERM: fp32 step time (wall) 110.00 ms, mean over 2 runs"
    assert precision_study.main(["paired", str(fp32), str(bf16)]) == 0
    assert capsys.readouterr().out.splitlines() == lines


def test_one_pair_has_no_error_bar(tmp_path):
    fp32, bf16 = tmp_path / "fp32", tmp_path / "bf16"
    write_job(fp32, "a", "FGMix", 0, 0, (0.5, 0.5))
    write_job(bf16, "a", "FGMix", 0, 0, (0.6, 0.5))
    assert "± nan points (n = 1 pairs)" in precision_study.paired(str(fp32), str(bf16))[0]


def test_bad_directories_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for argv in (["paired", str(tmp_path / "missing"), str(tmp_path / "empty")],
                 ["paired", str(tmp_path / "empty"), str(tmp_path / "empty")]):
        with pytest.raises(SystemExit) as exit_:
            precision_study.main(argv)
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("precision_study: error: ")
    assert not os.path.exists(tmp_path / "missing")


def test_two_sweeps_of_the_same_precision_are_refused(tmp_path, capsys):
    # Issue 31: `paired A A` on two fp32 sweeps reported "bf16 - fp32 = +0.00", exit 0.
    fp32, other = tmp_path / "fp32", tmp_path / "fp32_again"
    write_job(fp32, "a", "ERM", 0, 0, (0.5, 0.5))
    write_job(other, "a", "ERM", 0, 0, (0.5, 0.5))
    for argv in (["paired", str(fp32), str(fp32)], ["paired", str(fp32), str(other)],
                 ["paired", str(tmp_path / "bf16"), str(fp32)]):
        if not (tmp_path / "bf16").exists():
            write_job(tmp_path / "bf16", "a", "ERM", 0, 0, (0.5, 0.5))
        with pytest.raises(SystemExit) as exit_:
            precision_study.main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert exit_.value.code == 2 and len(err) == 1, err
        assert "fp32 sweep, then a bf16 sweep" in err[0]
