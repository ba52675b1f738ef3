"""`domainbed.train(...)`, the Python API of one training job: the CLI's records, files and
refusals (as CommandErrors, never SystemExit)."""
import json
import os

import pytest

import domainbed
from domainbed import training
from domainbed.lib.cli import CommandError
from domainbed.scripts import train as train_script

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TIMING = ("step_time", "mem_gb")


def without_timing(records):
    """Records without the timing fields and the output directory (the only differences
    between two runs of one job in two directories)."""
    kept = []
    for record in records:
        record = {k: v for k, v in record.items() if k not in TIMING}
        record["args"] = {k: v for k, v in record["args"].items() if k != "output_dir"}
        kept.append(record)
    return kept


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_the_api_writes_the_records_of_the_command_line(tmp_path, capsys):
    hparams = {"lr": 0.001}
    argv = ["--dataset", "Debug28", "--algorithm", "ERM", "--test_envs", "0", "--steps", "3",
            "--checkpoint_freq", "2", "--seed", "5", "--trial_seed", "1", "--hparams_seed", "2",
            "--hparams", json.dumps(hparams, sort_keys=True), "--output_dir",
            str(tmp_path / "cli")]
    assert train_script.main(argv) == 0
    records = domainbed.train(dataset="Debug28", algorithm="ERM", test_envs=[0],
                              output_dir=tmp_path / "api", data_dir=None, steps=3,
                              checkpoint_freq=2, seed=5, trial_seed=1, hparams_seed=2,
                              hparams=hparams)
    cli_records = read_jsonl(tmp_path / "cli" / "results.jsonl")
    assert [r["step"] for r in records] == [0, 2]
    assert records == read_jsonl(tmp_path / "api" / "results.jsonl")
    assert without_timing(records) == without_timing(cli_records)
    # The same args, in the same order (the order of the JSON lines).
    assert list(records[0]["args"]) == list(cli_records[0]["args"])
    assert sorted(os.listdir(tmp_path / "api")) == sorted(os.listdir(tmp_path / "cli"))
    assert (tmp_path / "api" / "done").exists()
    # A finished job is not run again: its records come back as they are.
    capsys.readouterr()
    assert domainbed.train(dataset="Debug28", algorithm="ERM", test_envs=0,
                           output_dir=str(tmp_path / "api"), data_dir=None, steps=3,
                           checkpoint_freq=2, seed=5, trial_seed=1, hparams_seed=2,
                           hparams=json.dumps(hparams)) == records
    assert "already done" in capsys.readouterr().err


@pytest.mark.parametrize("changes, message", [
    ({"test_envs": [7]}, "out of range"),
    ({"algorithm": "ERN"}, "Did you mean 'ERM'?"),
    ({"hparams": {"no_such_hparam": 1}}, "no_such_hparam"),
    ({"holdout_fraction": 1.5}, "--holdout_fraction"),
])
def test_refusals_are_command_errors_and_leave_nothing(tmp_path, changes, message):
    kwargs = dict(dataset="Debug28", algorithm="ERM", test_envs=[0],
                  output_dir=tmp_path / "job", data_dir=None, steps=2)
    kwargs.update(changes)
    with pytest.raises(training.BadInput) as caught:
        domainbed.train(**kwargs)
    assert isinstance(caught.value, CommandError) and caught.value.exit_code == 2
    assert message in str(caught.value)
    assert not (tmp_path / "job").exists()


def test_another_jobs_directory_is_refused(tmp_path):
    common = dict(dataset="Debug28", algorithm="ERM", test_envs=[0],
                  output_dir=tmp_path / "job", data_dir=None, steps=1)
    domainbed.train(**common)
    with pytest.raises(training.BadInput):
        domainbed.train(**{**common, "seed": 1})


def test_importing_domainbed_still_imports_no_torch(fresh_python):
    result = fresh_python("import sys, domainbed; f = domainbed.train; "
                          "print('torch' in sys.modules, f.__module__)")
    # Resolving `domainbed.train` imports the training package (and torch); importing
    # `domainbed` alone does not.
    assert result.stdout.split() == ["True", "domainbed.training.api"]
    result = fresh_python("import sys, domainbed; print('torch' in sys.modules)")
    assert result.stdout.strip() == "False"
