"""Exact resume for train.py: what a checkpoint holds, and how results.jsonl is trimmed.

A checkpoint (`checkpoint.pt` in the job's output_dir) is the whole training state after
a finished step: the algorithm's `state_dict()` (parameters, buffers, and through
`get_extra_state` its optimizers and generators), every global RNG train.py's process
uses (Python `random`, NumPy, torch CPU and CUDA), each training stream's position, the
next step to run and the running lists not yet averaged into a record. Restoring it and
running the remaining steps gives the records and weights an uninterrupted run gives.
"""
import json
import os
import random

import numpy as np
import torch

from domainbed.lib import misc

CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_VERSION = 1


def capture_rng_states():
    states = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states):
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def training_state(algorithm, train_loaders, next_step, running_lists):
    """Everything needed to continue at `next_step` exactly as if never stopped."""
    return {
        "version": CHECKPOINT_VERSION,
        "next_step": int(next_step),
        "algorithm": algorithm.state_dict(),
        "train_loaders": [loader.state_dict() for loader in train_loaders],
        "rng": capture_rng_states(),
        "running_lists": {k: list(v) for k, v in running_lists.items()},
    }


def restore_training_state(state, algorithm, train_loaders):
    """Load `state` into the freshly built objects; returns (next_step, running_lists).

    Call after everything that consumes the global RNGs while being built (dataset,
    algorithm, loaders): the RNG states are restored last, so they win.
    """
    if state.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"checkpoint version {state.get('version')!r} is not "
                         f"{CHECKPOINT_VERSION}; delete checkpoint.pt to start over")
    if len(state["train_loaders"]) != len(train_loaders):
        raise ValueError("checkpoint has another number of training streams")
    algorithm.load_state_dict(state["algorithm"])
    for loader, loader_state in zip(train_loaders, state["train_loaders"]):
        loader.load_state_dict(loader_state)
    restore_rng_states(state["rng"])
    running_lists = {k: list(v) for k, v in state["running_lists"].items()}
    return state["next_step"], running_lists


def save_atomic(obj, path):
    """torch.save through a temporary file and a rename: the file is old or new, never torn."""
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(output_dir, state):
    save_atomic(state, os.path.join(output_dir, CHECKPOINT_FILE))


def load_checkpoint(output_dir):
    """The saved state, or None when the job has no checkpoint."""
    path = os.path.join(output_dir, CHECKPOINT_FILE)
    if not os.path.exists(path):
        return None
    # Not weights_only: the file holds RNG states (NumPy arrays, Python tuples). It is
    # written by train.py itself into the job's own directory.
    return torch.load(path, map_location="cpu", weights_only=False)


def remove_checkpoint(output_dir):
    try:
        os.remove(os.path.join(output_dir, CHECKPOINT_FILE))
    except FileNotFoundError:
        pass


def remove_stale_temporaries(output_dir):
    """Delete `*.tmp.<pid>` files a killed run left mid-write (call under the job's lock)."""
    for name in os.listdir(output_dir):
        stem, sep, pid = name.rpartition(".tmp.")
        if sep and stem and pid.isdigit():
            os.remove(os.path.join(output_dir, name))


def truncate_records(results_path, next_step):
    """Keep only the records of steps before `next_step` (atomic rewrite).

    Records after the checkpoint will be written again by the resumed run; keeping them
    would duplicate steps. A torn last line (a crash mid-write) is dropped too.
    """
    if not os.path.exists(results_path):
        return
    kept = []
    with open(results_path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("step", next_step) < next_step:
                kept.append(line if line.endswith("\n") else line + "\n")
    misc.atomic_write_text(results_path, "".join(kept))
