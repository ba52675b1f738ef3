"""train.py refuses bad input with one line that says what to do, a non-zero exit code,
and no file created or changed."""
import json
import os
import subprocess
import sys

import pytest

from domainbed import training
from domainbed.lib import jobdir
from domainbed.scripts import train
import support

REPO_ROOT = str(support.REPO_ROOT)


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
    try:
        code = train.main(argv)
    except SystemExit as e:   # argparse's own errors
        code = e.code
    captured = capsys.readouterr()
    assert code == training.EXIT_BAD_INPUT
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("train.py: error: ")
    for hint in hints:
        assert hint in lines[0]
    assert captured.out == ""
    assert snapshot(output_dir) == before, "a refused job changed its output_dir"
    return lines[0]


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
    # Issue 12, case 3: each of these used to write job.json/failed or give a traceback.
    "batch size 0": (["--hparams", '{"batch_size": 0}'], ["'batch_size' must be an integer in [1,"]),
    "negative batch size": (["--hparams", '{"batch_size": -4}'], ["'batch_size' must be"]),
    "fractional batch size": (["--hparams", '{"batch_size": 1.5}'],
                              ["'batch_size' must be an integer, got 1.5"]),
    "every env held out": (["--test_envs", "0", "1", "2"],
                           ["holds out every environment of Debug28", "leave at least one"]),
    "lr NaN": (["--hparams", '{"lr": NaN}'], ["'lr' must be a finite number, got nan"]),
    "lr infinite": (["--hparams", '{"lr": 1e400}'], ["'lr' must be a finite number"]),
    "negative lr": (["--hparams", '{"lr": -1}'], ["'lr' must be a number in (0, inf)"]),
    "negative weight decay": (["--hparams", '{"weight_decay": -0.1}'], ["'weight_decay'"]),
    "dropout 1": (["--hparams", '{"resnet_dropout": 1.0}'], ["'resnet_dropout' must be"]),
    "huge int": (["--hparams", '{"lr": ' + "9" * 400 + "}"], ["must be a finite number"]),
    "negative seed": (["--seed", "-1"], ["--seed must be an integer in [0, 2**32)"]),
    "seed 2**32": (["--seed", str(2**32)], ["--seed must be an integer in [0, 2**32)"]),
    "negative trial seed": (["--trial_seed", "-1"], ["--trial_seed must be"]),
    "hparams seed 2**32": (["--hparams_seed", str(2**32)], ["--hparams_seed must be"]),
    "not a number": (["--steps", "many"], ["argument --steps: invalid int value: 'many'"]),
    "deeply nested hparams": (["--hparams", "[" * 100000], ["--hparams is not valid JSON"]),
    "mixup alpha 0": (["--algorithm", "Mixup", "--hparams", '{"mixup_alpha": 0}'],
                      ["'mixup_alpha' must be a number in (0, inf)"]),
    "unknown flag": (["--stpes", "3"], ["unrecognized arguments: --stpes 3"]),
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
    args = training.parse_command_line(debug_argv(out)).identity()
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
    other = training.parse_command_line(debug_argv(out, "--trial_seed", "2")).record_args()
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
    assert proc.returncode == training.EXIT_BAD_INPUT
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "Did you mean 'Mixup'?" in proc.stderr
    assert proc.stdout == "" and not out.exists()


def test_output_dir_that_is_a_file_is_refused(tmp_path, capsys):
    out = tmp_path / "job"
    out.write_text("not a directory")
    assert_refused(capsys, debug_argv(out), out, "is a file; choose a directory")
    assert out.read_text() == "not a directory"


def test_hparams_not_an_object_says_so_once(tmp_path, capsys):
    out = tmp_path / "job"
    line = assert_refused(capsys, debug_argv(out, "--hparams", "[1]"), out, "must be a JSON object")
    assert line.count("--hparams") == 1, line


def test_corrected_command_runs_after_a_refusal(tmp_path, capsys):
    out = tmp_path / "job"
    assert_refused(capsys, debug_argv(out, "--hparams", '{"batch_size": 0}'), out)
    assert train.main(debug_argv(out, "--hparams", '{"batch_size": 4}')) == 0
    assert (out / "done").exists()


def test_directory_left_by_a_crash_before_any_record_takes_the_corrected_job(tmp_path, capsys):
    # job.json of another job, but no record, checkpoint or model: nothing to lose.
    out = tmp_path / "job"
    out.mkdir()
    other = training.parse_command_line(debug_argv(out, "--seed", "5")).identity()
    jobdir.write_job_identity(out, other)
    jobdir.write_failed(out, "ZeroDivisionError", 0)
    assert train.main(debug_argv(out)) == 0
    assert jobdir.read_job_args(out)["seed"] == 0 and not jobdir.is_failed(out)


@pytest.mark.parametrize("content", [b'{"foo": 1}\n', b"[1, 2]\n", b"\xff\xfe\n",
                                     b'{"step": 0}\n'])
def test_foreign_results_file_is_refused_and_kept(tmp_path, capsys, content):
    # Issue 12, case 2: a results.jsonl that train.py did not write is never emptied.
    out = tmp_path / "job"
    out.mkdir()
    (out / "results.jsonl").write_bytes(content)
    assert_refused(capsys, debug_argv(out), out, "results.jsonl", "move it away")
    assert (out / "results.jsonl").read_bytes() == content


def test_unexpected_error_while_building_is_one_line(tmp_path, capsys, monkeypatch):
    from domainbed.algorithms.erm import ERM

    def broken(*args, **kwargs):
        raise RuntimeError("shape mismatch\nsecond line")
    monkeypatch.setattr(ERM, "__init__", broken)
    out = tmp_path / "job"
    assert_refused(capsys, debug_argv(out), out, "cannot set up this job",
                   "RuntimeError: shape mismatch second line")
    assert not out.exists()


def test_cli_crash_during_training_is_one_line(tmp_path):
    """An exception in training: one console line (exit 1), the traceback in err.txt."""
    out = tmp_path / "job"
    code = ("import sys; from domainbed.scripts import train; from domainbed.algorithms.erm "
            "import ERM\n"
            "def boom(self, *a, **k):\n    raise RuntimeError('simulated crash')\n"
            "ERM.update = boom\nsys.exit(train.cli(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, *debug_argv(out)], cwd=REPO_ROOT,
                          env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO_ROOT),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("train.py: error: RuntimeError: simulated crash (at step 0;")
    assert "Traceback" in (out / "err.txt").read_text()
    assert jobdir.read_failed(out)["reason"] == "RuntimeError: simulated crash"


def test_refusal_under_the_lock_leaves_an_existing_directory_as_it_was(tmp_path, capsys):
    # A directory `sweep launch` made (launch.json); the data is missing, found while
    # building under the job's lock: the lock file goes again, nothing else changes.
    out = tmp_path / "sweep" / "job"
    out.mkdir(parents=True)
    (out / "launch.json").write_text(json.dumps({"launcher": "local"}))   # sweep's, by content
    argv = ["--dataset", "PACS", "--data_dir", str(tmp_path / "data"), "--output_dir", str(out)]
    assert_refused(capsys, argv, out, "dataset PACS not found")
    assert os.listdir(out) == ["launch.json"]


def test_refusal_under_the_lock_removes_every_directory_it_made(tmp_path, capsys):
    out = tmp_path / "a" / "b" / "job"
    argv = ["--dataset", "PACS", "--data_dir", str(tmp_path / "data"), "--output_dir", str(out)]
    assert_refused(capsys, argv, out, "dataset PACS not found")
    assert os.listdir(tmp_path) == []
