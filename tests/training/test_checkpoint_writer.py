"""The background checkpoint writer: what it writes is the state at the step (a copy),
the file on disk is always whole, and a failed write reaches the training thread."""
import errno
import threading

import pytest
import torch

from domainbed.training import checkpoint


def state(step, weight):
    module = torch.nn.Linear(2, 1)
    with torch.no_grad():
        module.weight.fill_(weight)
    return {"next_step": step + 1, "algorithm": module.state_dict(),
            "nested": [(torch.ones(2) * weight, {"k": torch.zeros(1)})], "rng": (1, 2)}, module


def test_the_file_holds_the_state_at_the_step_not_the_live_tensors(tmp_path):
    writer = checkpoint.CheckpointWriter(tmp_path)
    saved, module = state(4, 1.0)
    writer.save(saved)
    with torch.no_grad():              # training goes on while the copy is written
        module.weight.fill_(7.0)
        saved["nested"][0][0].fill_(7.0)
    writer.wait()
    loaded = checkpoint.load_checkpoint(tmp_path)
    assert loaded["algorithm"]["weight"].eq(1.0).all()
    assert loaded["nested"][0][0].eq(1.0).all() and isinstance(loaded["nested"][0], tuple)
    assert loaded["rng"] == (1, 2)
    # A module state_dict keeps its version metadata (load_state_dict reads it).
    assert hasattr(loaded["algorithm"], "_metadata")
    torch.nn.Linear(2, 1).load_state_dict(loaded["algorithm"])


def test_one_write_at_a_time_and_the_last_one_wins(tmp_path):
    writer = checkpoint.CheckpointWriter(tmp_path)
    for step in range(5):
        writer.save(state(step, float(step))[0])
    writer.wait()
    assert checkpoint.load_checkpoint(tmp_path)["next_step"] == 5
    assert not [p for p in tmp_path.iterdir() if ".tmp." in p.name]


def test_a_failed_background_write_is_raised_with_its_step(tmp_path, monkeypatch):
    release = threading.Event()

    def no_space(obj, f, *args, **kwargs):
        release.wait(5)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", no_space)
    writer = checkpoint.CheckpointWriter(tmp_path)
    writer.save(state(3, 1.0)[0])
    release.set()
    with pytest.raises(OSError) as caught:
        writer.wait()
    assert caught.value.errno == errno.ENOSPC and caught.value.checkpoint_step == 3
    assert list(tmp_path.iterdir()) == []          # no temporary, no torn file
    writer.wait()                                  # reported once


def test_waiting_quietly_drops_the_error(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint.torch, "save", lambda *a, **k: 1 / 0)
    writer = checkpoint.CheckpointWriter(tmp_path)
    writer.save(state(0, 1.0)[0])
    writer.wait(raise_error=False)
    writer.wait()
