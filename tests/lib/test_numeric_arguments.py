"""Every numeric argument of train, sweep, download and reproduce (collect_results takes
none) goes through the one validation layer (`domainbed/lib/validation.py`): a bad value is
one line on stderr, exit code 2, and nothing is created. Values upstream gives a meaning
keep it (`--steps 0` / `--checkpoint_freq 0`: the dataset's default). In-process, no
training."""
import os

import pytest

from domainbed.config import RunConfig
from domainbed.lib import validation
from domainbed.scripts import download, sweep, train
from domainbed.studies import reproduce

HUGE = str(2**31)


def call(main, argv):
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    return code


def assert_refused(tmp_path, capsys, monkeypatch, main, argv, hint):
    monkeypatch.chdir(tmp_path)
    code = call(main, argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.err + captured.out
    assert len(lines) == 1 and "error: " in lines[0], captured.err
    assert hint in lines[0], lines[0]
    assert "Launched" not in captured.out
    assert os.listdir(tmp_path) == [], "a refused command created something"


TRAIN = {
    "steps -1": (["--steps", "-1"], "--steps must be >= 0"),
    "steps huge": (["--steps", HUGE], f"--steps must be >= 0 and <= {2**31 - 1}"),
    "checkpoint_freq -1": (["--checkpoint_freq", "-1"], "--checkpoint_freq must be >= 0"),
    "checkpoint_freq huge": (["--checkpoint_freq", "9" * 30], "--checkpoint_freq must be"),
    "holdout 1.0": (["--holdout_fraction", "1.0"], "--holdout_fraction must be in [0, 1)"),
    "holdout nan": (["--holdout_fraction", "nan"], "--holdout_fraction must be in [0, 1)"),
    "holdout -inf": (["--holdout_fraction=-inf"], "--holdout_fraction must be in [0, 1)"),
    "uda inf": (["--uda_holdout_fraction", "inf"], "--uda_holdout_fraction must be in [0, 1)"),
    "uda 1.0": (["--uda_holdout_fraction", "1.0"], "--uda_holdout_fraction must be in [0, 1)"),
    "seed -1": (["--seed", "-1"], "--seed must be an integer in [0, 2**32)"),
    "trial_seed 2**32": (["--trial_seed", str(2**32)], "--trial_seed must be"),
    "hparams_seed -1": (["--hparams_seed", "-1"], "--hparams_seed must be"),
    "duplicate test envs": (["--test_envs", "1", "1"], "given more than once"),
    "test env -1": (["--test_envs", "-1"], "out of range"),
    "steps not an integer": (["--steps", "1.5"], "invalid int value: '1.5'"),
}


@pytest.mark.parametrize("case", list(TRAIN))
def test_train_numbers(case, tmp_path, capsys, monkeypatch):
    flags, hint = TRAIN[case]
    argv = ["--dataset", "Debug28", "--data_dir", "data", "--output_dir", "out", *flags]
    assert_refused(tmp_path, capsys, monkeypatch, train.main, argv, hint)


SWEEP = {
    "n_trials -1": (["--n_trials", "-1"], "--n_trials must be >= 1"),
    "n_trials 0": (["--n_trials", "0"], "--n_trials must be >= 1"),
    "n_trials huge": (["--n_trials", "100000000"], "--n_trials must be >= 1 and <= 10000"),
    "n_hparams -2": (["--n_hparams", "-2"], "--n_hparams must be >= 1"),
    "n_hparams 0": (["--n_hparams", "0"], "--n_hparams must be >= 1"),
    "n_hparams <= n_hparams_from": (["--n_hparams_from", "3", "--n_hparams", "3"],
                                    "leaves no hparam draw"),
    "n_hparams_from -1": (["--n_hparams_from", "-1"], "--n_hparams_from must be >= 0"),
    "n_hparams range huge": (["--n_hparams", str(2**32)], "at most 10000"),
    "seed -1": (["--seed", "-1"], "--seed must be an integer in [0, 2**32)"),
    "steps -1": (["--steps", "-1"], "--steps must be >= 0"),
    "steps huge": (["--steps", HUGE], "--steps must be >= 0 and <="),
    "holdout 1.0": (["--holdout_fraction", "1.0"], "--holdout_fraction must be in [0, 1)"),
    "holdout nan": (["--holdout_fraction", "nan"], "--holdout_fraction must be in [0, 1)"),
    "holdout inf": (["--holdout_fraction", "inf"], "--holdout_fraction must be in [0, 1)"),
    "holdout 0": (["--holdout_fraction", "0"], "leaves every validation split empty"),
    "test_envs is not a sweep flag": (["--test_envs", "0"], "unrecognized arguments"),
}


SWEEP_RUNS = [("launch", case) for case in SWEEP] + [   # one of each kind for the others
    (command, case) for command in ("status", "delete_incomplete")
    for case in ("n_trials -1", "n_hparams -2", "holdout nan")]


@pytest.mark.parametrize("command, case", SWEEP_RUNS)
def test_sweep_numbers(command, case, tmp_path, capsys, monkeypatch):
    flags, hint = SWEEP[case]
    argv = [command, "--datasets", "Debug28", "--algorithms", "ERM", "--data_dir", "data",
            "--output_dir", "sweep", "--command_launcher", "dummy", "--skip_confirmation",
            *flags]
    assert_refused(tmp_path, capsys, monkeypatch, sweep.main, argv, hint)


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "1e300", "-0.0"])
def test_download_timeout(value, tmp_path, capsys, monkeypatch):
    argv = ["--data_dir", "data", "--datasets", "PACS", f"--timeout={value}"]
    assert_refused(tmp_path, capsys, monkeypatch, download.main, argv,
                   "--timeout must be a number in (0, 86400]")


REPRODUCE = {
    "n_trials 0": (["--n_trials", "0"], "--n_trials must be >= 1"),
    "n_hparams -1": (["--n_hparams", "-1"], "--n_hparams must be >= 1"),
    "n_trials huge": (["--n_trials", "9" * 12], "--n_trials must be >= 1 and <= 10000"),
    "steps -1": (["--steps", "-1"], "--steps must be >= 0"),
    "jobs 0": (["--jobs", "0"], "--jobs must be >= 1"),
    "jobs -3": (["--jobs", "-3"], "--jobs must be >= 1"),
    "iut_n_envs 1": (["--iut_n_envs", "1"], "--iut_n_envs must be >= 2"),
    "iut_n_envs repeated": (["--iut_n_envs", "3", "3"], "3 is given more than once"),
    "iut_n_hparams 0": (["--iut_n_hparams", "0"], "--iut_n_hparams must be >= 1"),
    "iut_n_trials -1": (["--iut_n_trials", "-1"], "--iut_n_trials must be >= 1"),
    "iut_steps -1": (["--iut_steps", "-1"], "--iut_steps must be >= 0"),
    "preset unknown": (["--preset", "huge"], "invalid choice: 'huge'"),
}


@pytest.mark.parametrize("case", list(REPRODUCE))
def test_reproduce_numbers(case, tmp_path, capsys, monkeypatch):
    flags, hint = REPRODUCE[case]
    argv = ["--output_dir", "out", *flags]
    assert_refused(tmp_path, capsys, monkeypatch, reproduce.main, argv, hint)


def test_upstream_meanings_are_kept():
    # --steps 0 and --checkpoint_freq 0: the dataset's default, as upstream.
    RunConfig(steps=0, checkpoint_freq=0)
    validation.check_count("--steps", 0, 0, validation.MAX_STEPS)
    with pytest.raises(validation.ValidationError, match="finite|number"):
        validation.check_number("--x", float("nan"), 0, 1)
    with pytest.raises(validation.ValidationError):
        validation.check_count("--x", True, 0)   # a bool is not a count
