"""Exact resume for train.py: what a checkpoint holds, and how results.jsonl is trimmed.

A checkpoint (`checkpoint.pt` in the job's output_dir) is the whole training state after
a finished step: the algorithm's `state_dict()` (parameters, buffers, and through
`get_extra_state` its optimizers and generators), every global RNG train.py's process
uses (Python `random`, NumPy, torch CPU and CUDA), each training stream's position, the
next step to run and the running lists not yet averaged into a record. Restoring it and
running the remaining steps gives the records and weights an uninterrupted run gives.
"""
import copy
import errno
import os
import random
import re
import shutil
import threading

import numpy as np
import torch

from domainbed.lib import jobdir, misc
from domainbed.lib.model_state import is_extra_state_key

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


class CheckpointError(ValueError):
    """checkpoint.pt cannot be read or does not fit this job; the message says why."""


def _check_state(state, n_streams):
    """Raise CheckpointError unless `state` has the structure training_state() writes."""
    if not isinstance(state, dict):
        raise CheckpointError(f"it holds a {type(state).__name__}, not a training state")
    if state.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"checkpoint version {state.get('version')!r} is not "
                              f"{CHECKPOINT_VERSION}")
    next_step = state.get("next_step")
    if not isinstance(next_step, int) or isinstance(next_step, bool) or next_step < 0:
        raise CheckpointError(f"next_step {next_step!r} is not a step number")
    for key, kind in (("algorithm", dict), ("train_loaders", list), ("rng", dict),
                      ("running_lists", dict)):
        if not isinstance(state.get(key), kind):
            raise CheckpointError(f"its {key!r} is missing or not a {kind.__name__}")
    if len(state["train_loaders"]) != n_streams:
        raise CheckpointError(f"it has {len(state['train_loaders'])} training streams, "
                              f"this job {n_streams}")
    for loader_state in state["train_loaders"]:
        drawn = loader_state.get("batches_drawn") if isinstance(loader_state, dict) else None
        if not isinstance(drawn, int) or isinstance(drawn, bool) or not 0 <= drawn <= next_step:
            raise CheckpointError(f"a stream position {drawn!r} does not fit step {next_step}")
    if not all(isinstance(v, list) for v in state["running_lists"].values()):
        raise CheckpointError("its running lists are not lists")
    if not {"python", "numpy", "torch"} <= set(state["rng"]):
        raise CheckpointError("its RNG states are incomplete")


def restore_training_state(state, algorithm, train_loaders):
    """Load `state` into the freshly built objects; returns (next_step, running_lists).

    Call after everything that consumes the global RNGs while being built (dataset,
    algorithm, loaders): the RNG states are restored last, so they win. A state that does
    not fit raises CheckpointError and leaves the objects and RNGs exactly as they were
    (so that the job can start from scratch instead).
    """
    _check_state(state, len(train_loaders))
    backup = (copy.deepcopy(algorithm.state_dict()),
              [loader.state_dict() for loader in train_loaders], capture_rng_states())
    try:
        # Loading tolerates a missing `_extra_state` (model.pkl holds weights only); a
        # checkpoint must have all of them, or the optimizers would restart silently.
        missing = [key for key in backup[0]
                   if is_extra_state_key(key) and key not in state["algorithm"]]
        if missing:
            raise KeyError(f"the training state lacks {', '.join(missing[:3])}")
        algorithm.load_state_dict(state["algorithm"])
        for loader, loader_state in zip(train_loaders, state["train_loaders"]):
            loader.load_state_dict(loader_state)
        restore_rng_states(state["rng"])
        running_lists = {k: list(v) for k, v in state["running_lists"].items()}
    except Exception as e:
        algorithm.load_state_dict(backup[0])
        for loader, loader_state in zip(train_loaders, backup[1]):
            loader.load_state_dict(loader_state)
        restore_rng_states(backup[2])
        raise CheckpointError(f"it does not fit this job ({type(e).__name__}: "
                              f"{' '.join(str(e).split())[:200]})") from None
    return state["next_step"], running_lists


def save_atomic(obj, path):
    """torch.save through a temporary file and a rename: the file is old or new, never
    torn; the temporary is removed when the write fails (e.g. a full disk)."""
    def write(f):
        try:
            torch.save(obj, f)
        except RuntimeError as error:
            # torch reports a failed write of its zip writer as a RuntimeError
            # ("unexpected pos ..."): on a full disk, say so as the OSError it is.
            if _disk_full(os.path.dirname(os.path.abspath(path))):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), f.name) from error
            raise

    misc.atomic_write(path, write)


def _disk_full(directory, margin=1 << 20):
    try:
        stats = os.statvfs(directory)
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < margin


def save_checkpoint(output_dir, state):
    save_atomic(state, os.path.join(output_dir, CHECKPOINT_FILE))


def cpu_copy(obj):
    """A copy of a training state whose tensors are detached CPU copies: what the state was
    at this step, whatever training does to the live tensors afterwards."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        copied = type(obj)((key, cpu_copy(value)) for key, value in obj.items())
        if hasattr(obj, "_metadata"):   # a module state_dict's versions (load_state_dict)
            copied._metadata = copy.deepcopy(obj._metadata)
        return copied
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
        return type(obj)(cpu_copy(value) for value in obj)
    return copy.deepcopy(obj)


class CheckpointWriter:
    """Writes training states to checkpoint.pt in a background thread.

    Why: a ResNet-50 state with Adam's moments is ~280 MB; serialising and fsyncing it at
    every record step stalled the GPU for seconds. The state is copied to CPU memory at the
    step (tens of ms), and training goes on while the copy is written, synced and renamed
    into place (`save_atomic`: the file on disk is always a whole checkpoint, the previous
    one until the rename). One write at a time: `save` first waits for the previous one.
    A failed write is raised by the next `save` or `wait`, as the OSError it is, with the
    step it belongs to in `error.checkpoint_step`."""

    def __init__(self, output_dir):
        self.path = os.path.join(output_dir, CHECKPOINT_FILE)
        self._thread = None
        self._error = None

    def save(self, state):
        self.wait()
        snapshot = cpu_copy(state)
        self._thread = threading.Thread(target=self._write, args=(snapshot,),
                                        name="checkpoint-writer", daemon=True)
        self._thread.start()

    def _write(self, state):
        try:
            save_atomic(state, self.path)
        except BaseException as error:   # re-raised in the training thread
            error.checkpoint_step = state["next_step"] - 1
            self._error = error

    def wait(self, raise_error=True):
        """Block until the write in flight (if any) is on disk; raise its error, if any
        (unless `raise_error` is False: the caller is already failing)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is not None and raise_error:
            raise error


def load_checkpoint(output_dir):
    """The saved state, or None when the job has no checkpoint. Raises CheckpointError
    when the file cannot be read as a checkpoint (truncated, empty, garbage, a directory)."""
    path = os.path.join(output_dir, CHECKPOINT_FILE)
    if not os.path.lexists(path):
        return None
    if not os.path.isfile(path):
        raise CheckpointError("it is not a regular file")
    # Not weights_only: the file holds RNG states (NumPy arrays, Python tuples). It is
    # written by train.py itself into the job's own directory.
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:   # pickle, zip, EOF, RuntimeError... whatever garbage raises
        raise CheckpointError(f"it cannot be read ({type(e).__name__}: "
                              f"{' '.join(str(e).split())[:200]})") from None


def set_aside(output_dir, name=CHECKPOINT_FILE):
    """Rename `name` to the first free `name.corrupt-N` (never deleted); returns the new
    name, or None when even the rename failed."""
    source = os.path.join(output_dir, name)
    for n in range(1, 10000):
        target = f"{name}.corrupt-{n}"
        if not os.path.lexists(os.path.join(output_dir, target)):
            try:
                os.rename(source, os.path.join(output_dir, target))
            except OSError:
                return None
            return target
    return None


def remove_checkpoint(output_dir):
    try:
        os.remove(os.path.join(output_dir, CHECKPOINT_FILE))
    except FileNotFoundError:
        pass


# The files train.py itself writes through `<name>.tmp.<pid>` (other writers, such as
# `sweep launch` writing launch.json, keep their temporaries).
TEMPORARY_STEMS = (CHECKPOINT_FILE, "results.jsonl", "heartbeat.json", "job.json", "failed",
                   "done", "model.pkl", "model_iid.pkl")
_MODEL_STEP = re.compile(r"model_step\d+\.pkl")


def remove_stale_temporaries(output_dir):
    """Delete the `<file>.tmp.<pid>` regular files a killed train.py left mid-write (call
    under the job's lock). Directories, links and other writers' temporaries stay."""
    for name in os.listdir(output_dir):
        stem, sep, pid = name.rpartition(".tmp.")
        if not (sep and pid.isdigit() and (stem in TEMPORARY_STEMS or _MODEL_STEP.fullmatch(stem))):
            continue
        path = os.path.join(output_dir, name)
        if os.path.isfile(path) and not os.path.islink(path):
            try:
                os.remove(path)
            except OSError:
                pass


def remove_own_temporaries(output_dir):
    """Delete this process's `*.tmp.<pid>` files (after a failed write, e.g. disk full)."""
    suffix = f".tmp.{os.getpid()}"
    try:
        names = os.listdir(output_dir)
    except OSError:
        return
    for name in names:
        path = os.path.join(output_dir, name)
        if name.endswith(suffix) and os.path.isfile(path) and not os.path.islink(path):
            try:
                os.remove(path)
            except OSError:
                pass


def is_own_record(record, identity=None):
    """A results.jsonl line of this job: an object with an integer `step` and `args`
    (whose identifying keys are `identity`'s, when given)."""
    if record is None:
        return False
    step, its_args = record.get("step"), record.get("args")
    if not isinstance(step, int) or isinstance(step, bool) or not isinstance(its_args, dict):
        return False
    if identity is None:
        return True
    ours = jobdir.normalised(identity)
    return jobdir.normalised({k: its_args.get(k) for k in ours}) == ours


def truncate_records(results_path, next_step, identity=None):
    """Keep only the records of steps before `next_step` (atomic rewrite).

    Records after the checkpoint will be written again by the resumed run; keeping them
    would duplicate steps. A torn last line (a crash mid-write) is dropped too. Other lines
    that are not records of this job (bad bytes, JSON that is not an object, no integer
    `step`, `args` missing or, with `identity`, of another job, a step already recorded
    above) are dropped from results.jsonl, but the whole
    original file is kept first as `results.jsonl.corrupt-N`. Returns that name, or None.
    """
    lines = jobdir.read_records_file(results_path)   # NotRegularFileError for a FIFO...
    if not os.path.lexists(results_path):
        return None
    kept, corrupt, seen = [], 0, set()
    for index, (_, line, record) in enumerate(lines):
        step = record.get("step") if record is not None else None
        if not is_own_record(record, identity) or step in seen:
            torn_end = index == len(lines) - 1 and not line.endswith(b"\n")
            corrupt += not torn_end
            continue
        seen.add(step)   # a step recorded twice keeps its first record
        if step < next_step:
            kept.append(line if line.endswith(b"\n") else line + b"\n")
    kept_as = None
    if corrupt:
        directory, name = os.path.split(results_path)
        kept_as = _copy_aside(results_path, directory, name)
    jobdir.atomic_write_bytes(results_path, b"".join(kept))
    return kept_as


def _copy_aside(path, directory, name):
    for n in range(1, 10000):
        target = os.path.join(directory, f"{name}.corrupt-{n}")
        if not os.path.lexists(target):
            shutil.copyfile(path, target)
            return os.path.basename(target)
    raise OSError(f"too many {name}.corrupt-N files in {directory}")
