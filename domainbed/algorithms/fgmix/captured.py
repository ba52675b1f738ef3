"""On a GPU: the step's small kernels as one captured CUDA graph (docs/method.md,
Implementation choices; docs/benchmarks.md). Not part of the method: the numbers are the
eager kernels'."""
import collections
import os
import warnings

import torch


class CapturedRegion:
    """Runs a function of tensors (tensors or None in, a tuple of tensors out) as a CUDA
    graph.

    Why: FGMix's policy step, weights and diagnostics are some 800 small kernels on
    [N, F] features; on an H200 their launches cost the host ~15 ms a step, more than the
    GPU spends on them, and the backbone's backward waits for them. A graph launches them
    at once. Per input shape, the first WARMUP calls run eagerly (libraries set up their
    workspaces, the optimizers create their state), the next is captured, and every call
    then replays it: the inputs are copied into the captured ones, and the outputs are the
    captured ones (valid until the next call). What the function reads besides its
    arguments (parameters, optimizer state) must stay where it is in memory, as torch's
    optimizers keep it. The kernels are the eager ones, so the numbers are too; except that
    the policy's Adam runs in its `capturable` form on the GPU (the same update, its step
    count on the device). Off on CPU, with DOMAINBED_CUDA_GRAPHS=0, and for good after a
    capture fails (one warning; eager from then on).
    """

    WARMUP = 2

    def __init__(self):
        self._graphs = {}
        self._calls = collections.Counter()
        self.failed = False

    def __deepcopy__(self, memo):   # a copied algorithm captures its own graph
        return CapturedRegion()

    def __reduce__(self):
        return (CapturedRegion, ())

    def active(self, tensor):
        return (tensor.is_cuda and not self.failed
                and os.environ.get("DOMAINBED_CUDA_GRAPHS", "1") != "0")

    def prepare(self, algorithm, tensor):
        """The policy optimizer in the form this device's calls need: capturable (step
        count on the GPU) when the region is captured, torch's default otherwise."""
        optimizer = getattr(algorithm, "policy_optimizer", None)
        if optimizer is None:
            return
        capturable = self.active(tensor)
        for group in optimizer.param_groups:
            group["capturable"] = capturable
        for state in optimizer.state.values():
            if "step" in state:
                state["step"] = state["step"].to(tensor.device if capturable else "cpu",
                                                 torch.float32)

    def __call__(self, function, *inputs):
        if not self.active(inputs[0]):
            return function(*inputs)
        key = tuple(None if t is None else (t.shape, t.dtype) for t in inputs)
        if key not in self._graphs:
            self._calls[key] += 1
            if self._calls[key] <= self.WARMUP or not self._capture(key, function, inputs):
                return function(*inputs)
        graph, static_inputs, static_outputs = self._graphs[key]
        for static, value in zip(static_inputs, inputs):
            if static is not None:
                static.copy_(value)
        graph.replay()
        return static_outputs

    def _capture(self, key, function, inputs):
        static_inputs = [None if t is None else t.clone() for t in inputs]
        graph = torch.cuda.CUDAGraph()
        try:
            torch.cuda.synchronize()
            with torch.cuda.graph(graph):
                static_outputs = function(*static_inputs)
        except Exception as error:   # an op that cannot be captured: stay eager
            self.failed = True
            warnings.warn(f"FGMix: CUDA graph capture failed ({type(error).__name__}: "
                          f"{str(error)[:200]}); running eagerly")
            return False
        self._graphs[key] = (graph, static_inputs, static_outputs)
        return True
