"""How many tensor operations one call dispatches: a device-independent measure of a
step's small-kernel cost.

Why count: on a GPU a step of small tensors (FGMix's policy step, its weights and
diagnostics) costs about one kernel per operation, launched eagerly or replayed from a
CUDA graph, and on a CPU each operation of a tiny network costs its dispatch overhead;
neither depends on the arithmetic. The count is the same on any machine, so a change that
removes operations can be measured without a GPU (`benchmark --count_ops`).

Counted at torch's dispatcher (every ATen operation, forward and backward), then split:
  kernels   operations that compute (a GPU launches one kernel, or a few, for each);
  other     operations that only relabel memory (view, transpose, detach, ...), allocate,
            or read a value back to the host (`.item()`): no kernel of their own.
"""
import collections

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# Operations that allocate, read back or relabel memory (`_unsafe_view` is a view its
# schema does not declare) but compute nothing on the device.
NO_KERNEL = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided",
             "lift_fresh", "set_", "_local_scalar_dense", "_unsafe_view"}


def kind_of(func):
    if func.is_view or func.overloadpacket.__name__ in NO_KERNEL:
        return "other"
    return "kernels"


class OpCounter(TorchDispatchMode):
    """`with OpCounter() as counter: ...`, then `counter.totals()` and `counter.by_name`."""

    def __init__(self):
        super().__init__()
        self.by_name = collections.Counter()
        self.by_kind = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.by_name[func.overloadpacket.__name__] += 1
        self.by_kind[kind_of(func)] += 1
        return func(*args, **(kwargs or {}))

    def totals(self):
        return {kind: self.by_kind[kind] for kind in ("kernels", "other")}


def count_ops(function, *args, **kwargs):
    """({"kernels": k, "other": o}, the function's result) of one call."""
    with OpCounter() as counter:
        result = function(*args, **kwargs)
    return counter.totals(), result
