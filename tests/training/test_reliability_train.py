"""train.py under damage (issue 12): a corrupt checkpoint is set aside and the job starts
again from step 0, a full disk is one line plus `failed`, temporaries of other writers stay.

Every run is Debug28/ERM, 6 steps, compared with one uninterrupted reference run."""
import errno
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from domainbed import training
from domainbed.algorithms.erm import ERM
from domainbed.lib import jobdir
from domainbed.training import checkpoint
from domainbed.scripts import train
import support
from support import comparable_records as records

REPO_ROOT = str(support.REPO_ROOT)


def argv(output_dir):
    return ["--dataset", "Debug28", "--algorithm", "ERM", "--steps", "6", "--checkpoint_freq",
            "2", "--hparams", '{"batch_size": 8}', "--output_dir", str(output_dir)]


def flatten(obj, prefix=""):
    if isinstance(obj, dict):
        return {k: v for key, value in obj.items() for k, v in flatten(value, f"{prefix}/{key}").items()}
    if isinstance(obj, (list, tuple)):
        return {k: v for i, value in enumerate(obj) for k, v in flatten(value, f"{prefix}[{i}]").items()}
    return {prefix: obj}


def model_leaves(output_dir):
    return flatten(torch.load(output_dir / "model.pkl", weights_only=False)["model_dict"])


def assert_same_run(reference, other):
    assert (other / "done").read_text() == "done"
    assert records(other) == records(reference)
    a, b = model_leaves(reference), model_leaves(other)
    assert a.keys() == b.keys()
    for key in a:
        same = torch.equal(a[key], b[key]) if isinstance(a[key], torch.Tensor) else a[key] == b[key]
        assert same, key


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "job"
    assert train.main(argv(out)) == 0
    return out


@pytest.fixture(scope="module")
def crashed(tmp_path_factory):
    """A job that crashed at step 3: records of steps 0 and 2, checkpoint at step 3."""
    out = tmp_path_factory.mktemp("crashed") / "job"
    original = ERM.update
    calls = []

    def crash_at_step_3(self, minibatches, unlabeled=None):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("simulated crash")
        return original(self, minibatches, unlabeled)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ERM, "update", crash_at_step_3)
        with pytest.raises(RuntimeError):
            train.main(argv(out))
    assert checkpoint.load_checkpoint(out)["next_step"] == 3
    return out


def copy_of(crashed, tmp_path):
    out = tmp_path / "job"
    shutil.copytree(crashed, out)
    return out


def corrupt(path, kind):
    if kind == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(os.urandom(4096))
    elif kind == "directory":
        path.unlink()
        path.mkdir()
    elif kind == "not a state":
        torch.save([1, 2, 3], path)
    elif kind == "wrong version":
        state = torch.load(path, weights_only=False)
        torch.save(dict(state, version=99), path)
    elif kind == "wrong shapes":  # fails half-way through load_state_dict
        state = torch.load(path, weights_only=False)
        weights = state["algorithm"]
        last = sorted(k for k in weights if k.endswith("weight"))[-1]
        weights[last] = torch.zeros(3, 3)
        torch.save(state, path)
    elif kind == "huge stream position":
        state = torch.load(path, weights_only=False)
        state["train_loaders"][0]["batches_drawn"] = 10**12
        torch.save(state, path)


KINDS = ["truncated", "empty", "garbage", "directory", "not a state", "wrong version",
         "wrong shapes", "huge stream position"]


@pytest.mark.parametrize("kind", KINDS)
def test_every_corruption_is_a_checkpoint_error(crashed, tmp_path, kind):
    """Each kind is refused by load_checkpoint or restore_training_state (CheckpointError,
    nothing else), and set_aside renames whatever is there."""
    out = copy_of(crashed, tmp_path)
    corrupt(out / "checkpoint.pt", kind)
    job = training.prepare(training.parse_command_line(argv(out)))
    before = {k: v.clone() for k, v in job.algorithm.state_dict().items()
              if isinstance(v, torch.Tensor)}
    with pytest.raises(checkpoint.CheckpointError):
        state = checkpoint.load_checkpoint(out)
        checkpoint.restore_training_state(state, job.algorithm, job.streams)
    after = job.algorithm.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "not rolled back"
    assert [loader.state_dict()["batches_drawn"] for loader in job.streams] == [0, 0]
    assert checkpoint.set_aside(out) == "checkpoint.pt.corrupt-1"
    assert not os.path.lexists(out / "checkpoint.pt")


@pytest.mark.parametrize("kind", ["truncated", "wrong shapes"])
def test_corrupt_checkpoint_is_set_aside_and_the_job_starts_again(
        crashed, reference, tmp_path, capsys, kind):
    out = copy_of(crashed, tmp_path)
    corrupt(out / "checkpoint.pt", kind)
    before = (out / "checkpoint.pt").read_bytes() if kind != "directory" else None
    capsys.readouterr()
    assert train.main(argv(out)) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("train.py: warning: checkpoint.pt is unusable (")
    assert "kept as checkpoint.pt.corrupt-1, starting again from step 0" in err[0]
    kept = out / "checkpoint.pt.corrupt-1"
    if before is not None:
        assert kept.read_bytes() == before       # renamed, never deleted
    else:
        assert kept.is_dir()
    assert_same_run(reference, out)              # from scratch, exactly the reference run
    assert not jobdir.is_failed(out)


def test_good_checkpoint_still_resumes(crashed, reference, tmp_path):
    out = copy_of(crashed, tmp_path)
    assert train.main(argv(out)) == 0
    assert "Resuming from checkpoint.pt at step 3" in (out / "out.txt").read_text()
    assert_same_run(reference, out)
    assert not list(out.glob("*.corrupt-*"))


def test_temporaries_of_others_and_directories_survive_the_start(crashed, reference, tmp_path):
    out = copy_of(crashed, tmp_path)
    (out / "checkpoint.pt.tmp.12").mkdir()             # used to break the start-up
    (out / "launch.json.tmp.77").write_text("{}")      # sweep launch, writing right now
    (out / "results.jsonl.tmp.5").write_text("torn")   # ours, left by a killed run
    assert train.main(argv(out)) == 0
    assert (out / "checkpoint.pt.tmp.12").is_dir()
    assert (out / "launch.json.tmp.77").read_text() == "{}"
    assert not (out / "results.jsonl.tmp.5").exists()
    assert_same_run(reference, out)


def test_corrupt_result_lines_are_dropped_with_a_copy_kept(crashed, reference, tmp_path,
                                                          capsys):
    out = copy_of(crashed, tmp_path)
    results = out / "results.jsonl"
    lines = results.read_bytes().splitlines(keepends=True)
    damaged = lines[0] + b"\xff\xfe not UTF-8\n" + b"[1, 2]\n" + lines[1]
    results.write_bytes(damaged)
    capsys.readouterr()
    assert train.main(argv(out)) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "kept as results.jsonl.corrupt-1" in err[0]
    assert (out / "results.jsonl.corrupt-1").read_bytes() == damaged
    assert_same_run(reference, out)


def test_disk_full_while_checkpointing_is_one_line_and_failed(reference, tmp_path, capsys,
                                                              monkeypatch):
    out = tmp_path / "job"
    real_save = torch.save

    def no_space(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", no_space)
    assert train.main(argv(out)) == training.EXIT_IO_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("train.py: error: the disk is full")
    assert "at step 0; `failed` written; free some space" in err[0]
    assert "No space left" in jobdir.read_failed(out)["reason"]
    assert not [p.name for p in out.iterdir() if ".tmp." in p.name]
    assert not (out / "checkpoint.pt").exists() and not (out / "done").exists()
    assert not jobdir.is_running(out)

    monkeypatch.setattr(checkpoint.torch, "save", real_save)   # space freed: rerun
    assert train.main(argv(out)) == 0
    assert not jobdir.is_failed(out)
    assert_same_run(reference, out)


DISK_FULL_PLUGIN = """
import errno
import torch

def _no_space(obj, f, *args, **kwargs):
    f.write(b"partial")
    raise OSError(errno.ENOSPC, "No space left on device")

torch.save = _no_space

# The logs on a full disk: out.txt and err.txt opened on /dev/full (a link to it in the job
# directory would be refused by the write rule, which never writes through a link).
import os
from domainbed.lib import safe_write

_open_file = safe_write.open_file

def _full_logs(path, mode="w", **kwargs):
    if os.path.basename(path) in ("out.txt", "err.txt"):
        return open("/dev/full", mode, **kwargs)
    return _open_file(path, mode, **kwargs)

safe_write.open_file = _full_logs
"""


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_disk_full_cli_logs_and_checkpoint(tmp_path):
    """The reported case: logs and checkpoint both hit a full disk. It used to exit 120
    with only 'lost sys.stderr'; now: one line, exit 4, `failed`, no temporaries."""
    (tmp_path / "disk_full_plugin.py").write_text(DISK_FULL_PLUGIN)
    out = tmp_path / "job"
    out.mkdir()
    # This job's directory (job.json): logs that are not ours would be refused untouched.
    jobdir.write_job_identity(out, training.parse_command_line(argv(out)).identity())
    env = dict(os.environ, OMP_NUM_THREADS="1", DOMAINBED_PLUGINS="disk_full_plugin",
               PYTHONPATH=os.pathsep.join([str(tmp_path), REPO_ROOT]))
    proc = subprocess.run([sys.executable, "-m", "domainbed.scripts.train", *argv(out)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == training.EXIT_IO_ERROR, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("train.py: error: the disk is full"), proc.stderr
    assert jobdir.is_failed(out)
    assert not [p.name for p in out.iterdir() if ".tmp." in p.name]


def test_lost_records_before_the_checkpoint_restart_the_job(crashed, reference, tmp_path,
                                                           capsys):
    """results.jsonl emptied (or its early lines lost) while checkpoint.pt is fine: resuming
    would finish a job without its first records; it starts again from step 0 instead."""
    out = copy_of(crashed, tmp_path)
    (out / "results.jsonl").write_text("")
    capsys.readouterr()
    assert train.main(argv(out)) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lacks the records of steps 0, 2 before the checkpoint's step 3" \
        in err[0]
    assert_same_run(reference, out)


def test_torch_save_failing_on_a_full_disk_is_an_enospc_oserror(tmp_path, monkeypatch):
    """On a full disk torch.save raises RuntimeError('... unexpected pos ...'), found on a
    300 kB tmpfs; save_atomic turns it into the OSError it is, and leaves no temporary."""
    def torch_on_full_disk(obj, f, *args, **kwargs):
        f.write(b"PK")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 37376")
    monkeypatch.setattr(checkpoint.torch, "save", torch_on_full_disk)
    monkeypatch.setattr(checkpoint, "_disk_full", lambda directory: True)
    with pytest.raises(OSError) as caught:
        checkpoint.save_atomic({"a": 1}, str(tmp_path / "checkpoint.pt"))
    assert caught.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(checkpoint, "_disk_full", lambda directory: False)
    with pytest.raises(RuntimeError, match="unexpected pos"):   # not full: as it was
        checkpoint.save_atomic({"a": 1}, str(tmp_path / "checkpoint.pt"))
    assert list(tmp_path.iterdir()) == []


def test_directory_in_the_way_of_the_checkpoint_temporary_is_named(tmp_path, capsys):
    # The message used to name checkpoint.pt, not the directory that is in the way.
    out = tmp_path / "job"
    out.mkdir()
    args = training.parse_command_line(argv(out)).identity()
    jobdir.write_job_identity(out, args)           # a directory of this job
    in_the_way = out / f"checkpoint.pt.tmp.{os.getpid()}"
    in_the_way.mkdir()
    assert train.main(argv(out)) == training.EXIT_IO_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert f"{in_the_way} is a directory in the way; move it away" in err[0], err[0]
    assert str(in_the_way) in jobdir.read_failed(out)["reason"]
