"""train.py refuses bad input with one line that says what to do, a non-zero exit code,
and no file created or changed."""
import json
import os
import subprocess
import sys

import pytest

from domainbed.lib import jobdir
from domainbed.scripts import train

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def debug_argv(output_dir, *extra):
    return ["--dataset", "Debug28", "--steps", "1", "--output_dir", str(output_dir), *extra]


def snapshot(path):
    """name -> (size, mtime) of everything under `path` (None if it does not exist)."""
    if not path.exists():
        return None
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in path.rglob("*")}


def assert_refused(capsys, argv, output_dir, *hints):
    before = snapshot(output_dir)
    code = train.main(argv)
    captured = capsys.readouterr()
    assert code == train.EXIT_BAD_INPUT
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("train.py: error: ")
    for hint in hints:
        assert hint in lines[0]
    assert captured.out == ""
    assert snapshot(output_dir) == before, "a refused job changed its output_dir"


CASES = {
    "unknown algorithm": (["--algorithm", "ERN"], ["unknown algorithm 'ERN'", "Did you mean 'ERM'?"]),
    "unknown dataset": (["--dataset", "Debug27"], ["unknown dataset 'Debug27'",
                                                   "Did you mean 'Debug28'?"]),
    "test env too large": (["--test_envs", "3"], ["test env 3 is out of range for Debug28",
                                                  "0..2", "0=0, 1=1, 2=2"]),
    "negative test env": (["--test_envs", "-1"], ["test env -1 is out of range"]),
    "repeated test env": (["--test_envs", "1", "1"], ["given more than once"]),
    "hparams not JSON": (["--hparams", "{lr: 1}"], ["--hparams is not valid JSON",
                                                    '\'{"lr": 0.001}\'']),
    "hparams not an object": (["--hparams", "[1]"], ["must be a JSON object"]),
    "unknown hparam": (["--hparams", '{"learning_rate": 0.1}'],
                       ["unknown hparam 'learning_rate'", "Known:"]),
    "misspelt hparam": (["--hparams", '{"batchsize": 8}'], ["Did you mean 'batch_size'?"]),
    "wrong hparam type": (["--hparams", '{"lr": "big"}'], ["hparam 'lr' expects float"]),
    "bool for a number": (["--hparams", '{"batch_size": true}'], ["expects int"]),
    "holdout fraction": (["--holdout_fraction", "1.5"], ["--holdout_fraction must be in [0, 1)"]),
    "empty holdout": (["--holdout_fraction", "0"], ["leaves env 0 of Debug28 (16 items) an empty "
                                                    "out-split"]),
    "negative steps": (["--steps", "-3"], ["--steps must be >= 0"]),
    "adaptation without unlabeled data": (["--task", "domain_adaptation"],
                                          ["--uda_holdout_fraction above 0"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_flags_create_nothing(case, tmp_path, capsys):
    flags, hints = CASES[case]
    out = tmp_path / "job"
    assert_refused(capsys, debug_argv(out, *flags), out, *hints)
    assert not out.exists()


def test_missing_dataset_names_the_download_command(tmp_path, capsys):
    out = tmp_path / "job"
    argv = ["--dataset", "PACS", "--data_dir", str(tmp_path / "data"), "--output_dir", str(out)]
    assert_refused(capsys, argv, out, "dataset PACS not found",
                   "python -m domainbed.scripts.download")
    assert not out.exists()


@pytest.fixture
def existing_job(tmp_path):
    """An output_dir that belongs to `debug_argv(out)` (job.json and one record)."""
    out = tmp_path / "job"
    out.mkdir()
    args = train.identifying_args(train.build_parser().parse_args(debug_argv(out)))
    jobdir.write_job_identity(out, args)
    (out / "results.jsonl").write_text(json.dumps({"step": 0}) + "\n")
    return out


def test_output_dir_of_another_job_is_refused(existing_job, capsys):
    assert_refused(capsys, debug_argv(existing_job, "--seed", "7"), existing_job,
                   "belongs to another job", "seed: 0 there, 7 here", "use another --output_dir")


def test_upstream_output_dir_of_another_job_is_refused(tmp_path, capsys):
    # Written by upstream's train.py: no job.json, but its records carry the args.
    out = tmp_path / "job"
    out.mkdir()
    other = vars(train.build_parser().parse_args(debug_argv(out, "--trial_seed", "2")))
    (out / "results.jsonl").write_text(json.dumps({"step": 0, "args": other}) + "\n")
    assert_refused(capsys, debug_argv(out), out, "belongs to another job", "trial_seed: 2 there, 0 here")


def test_running_job_is_refused(existing_job, capsys):
    with jobdir.JobLock(existing_job):
        assert_refused(capsys, debug_argv(existing_job), existing_job, "already running")


def test_done_job_exits_0_untouched(existing_job, capsys):
    (existing_job / "done").write_text("done")
    before = snapshot(existing_job)
    assert train.main(debug_argv(existing_job)) == 0
    assert "already done" in capsys.readouterr().err
    assert snapshot(existing_job) == before


def test_cli_error_is_one_line_without_traceback(tmp_path):
    out = tmp_path / "job"
    proc = subprocess.run(
        [sys.executable, "-m", "domainbed.scripts.train", "--dataset", "Debug28",
         "--algorithm", "Mixpu", "--output_dir", str(out)],
        cwd=REPO_ROOT, env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO_ROOT),
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == train.EXIT_BAD_INPUT
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "Did you mean 'Mixup'?" in proc.stderr
    assert proc.stdout == "" and not out.exists()


def test_output_dir_that_is_a_file_is_refused(tmp_path, capsys):
    out = tmp_path / "job"
    out.write_text("not a directory")
    assert_refused(capsys, debug_argv(out), out, "is a file; choose a directory")
    assert out.read_text() == "not a directory"
