"""Exact resume: a run that is killed (SIGKILL), stopped (SIGTERM) or asked to stop
(SIGUSR1) and then restarted in the same output_dir ends with the records and weights of an
uninterrupted run, bit for bit (except step_time, mem_gb and args.output_dir)."""
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from domainbed.lib import jobdir
from domainbed.training import checkpoint
from domainbed.scripts import train
from support import comparable_records
import support

REPO_ROOT = str(support.REPO_ROOT)
STEPS, FREQ = 24, 4
ALGORITHM = "MixupUsingGlobalRngs"
PLUGIN = '''
import os, random, signal
import numpy as np
import torch
from domainbed.algorithms.mixup import Mixup
from domainbed.algorithms.registry import register_algorithm

@register_algorithm
class MixupUsingGlobalRngs(Mixup):
    """Mixup (its own generators) that also draws from every global RNG, as many upstream
    algorithms do, and can send itself SIGUSR1 after a chosen call."""

    def update(self, minibatches, unlabeled=None):
        vals = super().update(minibatches, unlabeled)
        vals["global_draw"] = random.random() + float(np.random.rand()) + torch.rand(1).item()
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls == int(os.environ.get("SIGNAL_AT_CALL", "0")):
            os.kill(os.getpid(), signal.SIGUSR1)
        return vals
'''


def job_argv(output_dir):
    return ["--dataset", "Debug28", "--algorithm", ALGORITHM, "--steps", str(STEPS),
            "--checkpoint_freq", str(FREQ), "--hparams", '{"batch_size": 8}',
            "--output_dir", str(output_dir)]


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("plugin")
    (path / "resume_plugin.py").write_text(PLUGIN)
    return path


@pytest.fixture(scope="module", autouse=True)
def in_process_setup(plugin_dir):
    # Subprocesses run with OMP_NUM_THREADS=1; in-process runs must use the same kernels.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(plugin_dir))
        patch.setenv("DOMAINBED_PLUGINS", "resume_plugin")
        patch.setenv("SIGNAL_AT_CALL", "0")
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("resume") / "uninterrupted"
    assert train.main(job_argv(out)) == 0
    return out


def start_subprocess(output_dir, plugin_dir):
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(plugin_dir), REPO_ROOT]))
    return subprocess.Popen([sys.executable, "-m", "domainbed.scripts.train", *job_argv(output_dir)],
                            cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def wait_for_first_checkpoint(proc, output_dir, timeout=240):
    deadline = time.time() + timeout
    while not (output_dir / checkpoint.CHECKPOINT_FILE).exists():
        assert proc.poll() is None, f"train.py exited early: {proc.stderr.read()}"
        assert time.time() < deadline, "no checkpoint.pt in time"
        time.sleep(0.01)


def flatten(obj, prefix=""):
    """path -> leaf for nested dicts/lists (model_dict holds optimizer and RNG state too)."""
    if isinstance(obj, dict):
        items = {}
        for key, value in obj.items():
            items.update(flatten(value, f"{prefix}/{key}"))
        return items
    if isinstance(obj, (list, tuple)):
        items = {}
        for i, value in enumerate(obj):
            items.update(flatten(value, f"{prefix}[{i}]"))
        return items
    return {prefix: obj}


def assert_same_model(dir_a, dir_b):
    a = flatten(torch.load(dir_a / "model.pkl", weights_only=False)["model_dict"])
    b = flatten(torch.load(dir_b / "model.pkl", weights_only=False)["model_dict"])
    assert a.keys() == b.keys()
    n_tensors = 0
    for path in a:
        if isinstance(a[path], torch.Tensor):
            assert torch.equal(a[path], b[path]), f"{path} differs"
            n_tensors += 1
        else:
            assert a[path] == b[path], f"{path} differs"
    assert n_tensors > 8


def assert_resumed_exactly(reference, resumed):
    assert (resumed / "done").read_bytes() == b"done"
    assert not jobdir.is_failed(resumed)
    assert comparable_records(resumed) == comparable_records(reference)
    assert_same_model(reference, resumed)


def resumed_at(output_dir):
    """The step the restart continued from, read from its log line."""
    for line in (output_dir / "out.txt").read_text().splitlines():
        if line.startswith("Resuming from checkpoint.pt at step "):
            return int(line.rsplit(" ", 1)[1])
    return None


def test_reference_run_is_complete(reference):
    records = comparable_records(reference)
    assert [r["step"] for r in records] == list(range(0, STEPS, FREQ)) + [STEPS - 1]
    assert all("global_draw" in r for r in records)
    assert not (reference / checkpoint.CHECKPOINT_FILE).exists()


def test_sigkill_then_restart_gives_the_same_run(reference, tmp_path, plugin_dir):
    out = tmp_path / "killed"
    proc = start_subprocess(out, plugin_dir)
    try:
        wait_for_first_checkpoint(proc, out)
        delay = random.uniform(0, 1.0)  # lands at a random step after the first checkpoint
        time.sleep(delay)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (out / "done").exists(), f"finished within {delay:.2f}s: raise STEPS"
    state = checkpoint.load_checkpoint(out)
    assert state is not None and 1 <= state["next_step"] < STEPS

    assert train.main(job_argv(out)) == 0
    assert resumed_at(out) == state["next_step"]
    assert_resumed_exactly(reference, out)


def test_sigterm_checkpoints_exits_143_and_resumes(reference, tmp_path, plugin_dir):
    out = tmp_path / "terminated"
    proc = start_subprocess(out, plugin_dir)
    try:
        wait_for_first_checkpoint(proc, out)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM == 143
    assert "SIGTERM received" in stderr and "Traceback" not in stderr
    assert not (out / "done").exists() and not jobdir.is_failed(out)
    assert not jobdir.is_running(out)
    stopped_at = checkpoint.load_checkpoint(out)["next_step"]
    assert jobdir.read_heartbeat(out)["step"] == stopped_at

    assert train.main(job_argv(out)) == 0
    assert resumed_at(out) == stopped_at >= 1
    assert_resumed_exactly(reference, out)


def test_sigusr1_between_checkpoints_keeps_the_running_means(reference, tmp_path, monkeypatch):
    monkeypatch.setenv("SIGNAL_AT_CALL", "7")  # step 6: between the checkpoints at 4 and 8
    out = tmp_path / "usr1"
    assert train.main(job_argv(out)) == 128 + signal.SIGUSR1
    state = checkpoint.load_checkpoint(out)
    assert state["next_step"] == 7
    assert len(state["running_lists"]["loss"]) == 2  # steps 5 and 6, not yet in a record
    assert [r["step"] for r in comparable_records(out)] == [0, 4]
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL, "handler not restored"

    monkeypatch.setenv("SIGNAL_AT_CALL", "0")
    assert train.main(job_argv(out)) == 0
    assert resumed_at(out) == 7
    assert_resumed_exactly(reference, out)


def test_truncate_records_drops_later_and_torn_lines(tmp_path):
    path = tmp_path / "results.jsonl"
    lines = [json.dumps({"step": s, "args": {}}) + "\n" for s in (0, 4, 8)]
    path.write_text("".join(lines) + '{"step": 12, "env0_in')
    checkpoint.truncate_records(str(path), next_step=5)
    assert path.read_text() == "".join(lines[:2])
    checkpoint.truncate_records(str(path), next_step=0)
    assert path.read_text() == ""


def test_stale_temporaries_are_removed(tmp_path):
    (tmp_path / "checkpoint.pt.tmp.123").write_text("torn")
    (tmp_path / "results.jsonl").write_text("")
    checkpoint.remove_stale_temporaries(str(tmp_path))
    assert [p.name for p in tmp_path.iterdir()] == ["results.jsonl"]


def test_rng_states_round_trip():
    import numpy as np

    states = checkpoint.capture_rng_states()
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    checkpoint.restore_rng_states(states)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_truncate_records_survives_corrupt_lines_and_keeps_a_copy(tmp_path):
    path = tmp_path / "results.jsonl"
    r0, r4, r8 = (b'{"step": %d, "args": {}}\n' % s for s in (0, 4, 8))
    original = (r0 + b'\xff\xfe\n[1, 2]\n{"no_step": 1, "args": {}}\n{"step": 2}\n' + r4
                + b'{"step": 0, "args": {"again": 1}}\n' + r8 + b'{"step": 12, "env0_in')
    path.write_bytes(original)
    assert checkpoint.truncate_records(str(path), next_step=5) == "results.jsonl.corrupt-1"
    assert path.read_bytes() == r0 + r4    # no args, or step 0 twice: not kept
    assert (tmp_path / "results.jsonl.corrupt-1").read_bytes() == original
    # Only a torn last line: dropped without a copy (a crash mid-write, nothing lost).
    path.write_bytes(r0 + b'{"st')
    assert checkpoint.truncate_records(str(path), next_step=5) is None
    assert path.read_bytes() == r0


def test_truncate_records_refuses_a_fifo(tmp_path):
    os.mkfifo(tmp_path / "results.jsonl")
    with pytest.raises(jobdir.NotRegularFileError):
        checkpoint.truncate_records(str(tmp_path / "results.jsonl"), next_step=0)


def test_stale_temporaries_only_of_train_py_files(tmp_path):
    for name in ("checkpoint.pt.tmp.1", "model_step10.pkl.tmp.2", "heartbeat.json.tmp.3"):
        (tmp_path / name).write_text("torn")
    (tmp_path / "checkpoint.pt.tmp.4").mkdir()
    (tmp_path / "launch.json.tmp.5").write_text("sweep launch is writing it")
    (tmp_path / "notes.txt.tmp.6").write_text("somebody's")
    checkpoint.remove_stale_temporaries(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint.pt.tmp.4", "launch.json.tmp.5", "notes.txt.tmp.6"]


def test_truncate_records_keeps_only_records_of_this_job(tmp_path):
    path = tmp_path / "results.jsonl"
    ours = {"dataset": "Debug28", "seed": 0}
    mine = json.dumps({"step": 0, "args": dict(ours, output_dir="x")}) + "\n"
    forged = json.dumps({"step": 1, "args": {"dataset": "Debug28", "seed": 9}}) + "\n"
    path.write_text(mine + forged + mine)   # a foreign record and a duplicated line
    assert checkpoint.truncate_records(str(path), 5, identity=ours) == "results.jsonl.corrupt-1"
    assert path.read_text() == mine
