"""Files we did not write are never overwritten (issue 26): a directory that holds files
train.py, sweep, reproduce or download would write, but no record of ours, is somebody
else's. Refused with one line ("was not written by ... move it away"), exit 2, nothing
written; our own directories still resume as before."""
import json
import os

import pytest

from domainbed import training
from domainbed.lib import jobdir
from domainbed.scripts import download, sweep, train
from domainbed.studies import reproduce


def snapshot(path):
    return {str(p.relative_to(path)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(path.rglob("*"))}


def train_argv(out, *extra):
    return ["--dataset", "Debug28", "--data_dir", str(out.parent / "data"), "--steps", "1",
            "--output_dir", str(out), *extra]


FOREIGN = ["model.pkl", "model_iid.pkl", "checkpoint.pt", "done", "out.txt", "err.txt",
           "results.jsonl", "heartbeat.json", "failed", "model_step3.pkl", "tensorboard/",
           "checkpoint.pt.corrupt-1"]


@pytest.mark.parametrize("name", FOREIGN)
def test_train_refuses_a_directory_with_files_it_did_not_write(name, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    if name.endswith("/"):
        (out / name).mkdir()
        (out / name / "events.mine").write_text("precious")
    else:
        (out / name).write_text("" if name == "results.jsonl" else "precious\n")
    before = snapshot(tmp_path)
    assert train.main(train_argv(out)) == training.EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "was not written by train.py" in err[0] and "move it away" in err[0], err[0]
    assert name.rstrip("/") in err[0]
    assert snapshot(tmp_path) == before


def test_train_takes_a_directory_with_only_other_files(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert train.main(train_argv(out)) == 0
    assert (out / "notes.txt").read_text() == "mine" and (out / "done").exists()


def test_our_directory_without_records_still_runs(tmp_path, capsys):
    # job.json of this job (e.g. a run that stopped before its first record) and a sweep's
    # launch.json mark the directory as ours.
    out = tmp_path / "out"
    out.mkdir()
    jobdir.write_job_identity(out, training.parse_command_line(train_argv(out)).identity())
    (out / "out.txt").write_text("Environment:\n")
    assert train.main(train_argv(out)) == 0
    other = tmp_path / "other"
    other.mkdir()
    (other / "launch.json").write_text(json.dumps({"launcher": "local"}))
    (other / "err.txt").write_text("")
    assert train.main(train_argv(other)) == 0


DEBUG_SWEEP = ["--datasets", "Debug28", "--algorithms", "ERM", "--data_dir", "data",
               "--n_hparams", "1", "--n_trials", "1", "--skip_confirmation",
               "--command_launcher", "dummy"]


def _sweep(tmp_path, capsys, command):
    try:
        code = sweep.main([command, "--output_dir", str(tmp_path / "sweep"), *DEBUG_SWEEP])
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code or 0, captured.out, captured.err


def test_sweep_leaves_job_directories_it_did_not_make(tmp_path, capsys):
    code, _, err = _sweep(tmp_path, capsys, "launch")
    assert code == 0, err
    jobs = sorted((tmp_path / "sweep").iterdir())
    foreign = jobs[0]
    for name in os.listdir(foreign):
        os.remove(foreign / name)       # no launch.json, job.json or records any more
    (foreign / "model.pkl").write_text("precious")
    before = snapshot(tmp_path)
    # launch: refused, nothing made or launched
    code, out, err = _sweep(tmp_path, capsys, "launch")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "was not written by sweep or train.py" in err and "move it away" in err
    assert "Launched" not in out and snapshot(tmp_path) == before
    # delete_incomplete: the others go, the foreign one stays
    code, out, err = _sweep(tmp_path, capsys, "delete_incomplete")
    assert code == 0, err
    assert f"Not deleted (not written by sweep or train.py" in out and str(foreign) in out
    assert (foreign / "model.pkl").read_text() == "precious"
    assert sorted((tmp_path / "sweep").iterdir()) == [foreign]


def test_reproduce_refuses_an_output_folder_it_did_not_write(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "ablation.json").write_text("precious")
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit) as caught:
        reproduce.main(["--output_dir", str(out), "--report_only"])
    err = capsys.readouterr().err.strip().splitlines()
    assert caught.value.code == 2 and len(err) == 1, err
    assert "was not written by reproduce" in err[0] and "move it away" in err[0]
    assert snapshot(tmp_path) == before
    (out / "sweep").mkdir()              # an empty sweep/ proves nothing (issue 31)
    with pytest.raises(SystemExit):
        reproduce.parse_args(["--output_dir", str(out)])
    capsys.readouterr()
    job = out / "sweep" / "0123abcd"     # a job directory of a sweep of ours: taken
    job.mkdir()
    (job / "launch.json").write_text(json.dumps({"launcher": "pool"}))
    reproduce.check_output_dir(None, reproduce.parse_args(["--output_dir", str(out)]))


def test_download_refuses_a_staging_folder_it_did_not_make(tmp_path, capsys):
    data = tmp_path / "data"
    staging = data / ".staging-PACS"
    staging.mkdir(parents=True)
    (staging / "notes.txt").write_text("precious")
    archive = tmp_path / "PACS.zip"
    archive.write_bytes(b"not used")
    before = snapshot(tmp_path)
    code = download.main(["--data_dir", str(data), "--datasets", "PACS", "--no_progress",
                          "--source", f"PACS.zip={archive}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "was not written by download" in err[0] and "move it away" in err[0]
    assert snapshot(tmp_path) == before
