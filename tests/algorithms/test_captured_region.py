"""FGMix's `CapturedRegion` on the CPU, with a stand-in for torch's CUDA graph: warm-up
calls run eagerly, the next is captured, later calls copy their inputs into the captured
ones and replay; a capture that fails leaves the region eager for good (one warning)."""
import contextlib
import warnings

import pytest
import torch

from domainbed.algorithms import fgmix


class FakeGraph:
    """Records the function run under `capture` and runs it again on `replay`, reading the
    tensors it was captured with (as a CUDA graph reads its captured memory)."""
    current = None

    def __init__(self):
        self.recorded = None
        self.replays = 0

    def replay(self):
        self.replays += 1
        self.recorded()


@pytest.fixture
def fake_cuda(monkeypatch):
    graphs = []

    def new_graph():
        graphs.append(FakeGraph())
        return graphs[-1]

    @contextlib.contextmanager
    def capture(graph):
        FakeGraph.current = graph
        yield
        FakeGraph.current = None

    monkeypatch.setattr(torch.cuda, "CUDAGraph", new_graph)
    monkeypatch.setattr(torch.cuda, "graph", capture)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    monkeypatch.setattr(fgmix.CapturedRegion, "active", lambda self, tensor: not self.failed)
    monkeypatch.delenv("DOMAINBED_CUDA_GRAPHS", raising=False)
    return graphs


def doubling_into(outputs, calls):
    """A function with captured outputs: like a graph, it writes into fixed tensors."""
    def function(x, y):
        calls.append(x.clone())
        if FakeGraph.current is not None:   # capture: replay re-runs on the captured x, y
            FakeGraph.current.recorded = lambda: outputs[0].copy_(2 * x + y)
        outputs[0].copy_(2 * x + y)
        return (outputs[0],)
    return function


def test_warm_up_then_capture_then_replay_with_new_inputs(fake_cuda):
    region, calls, outputs = fgmix.CapturedRegion(), [], [torch.zeros(3)]
    function = doubling_into(outputs, calls)
    results = []
    for step in range(5):
        x = torch.full((3,), float(step))
        (out,) = region(function, x, None if step < 0 else torch.ones(3))
        results.append(out.clone())
    assert [r[0].item() for r in results] == [1.0, 3.0, 5.0, 7.0, 9.0]
    assert len(calls) == region.WARMUP + 1          # 2 eager calls, then the capture
    assert len(fake_cuda) == 1 and fake_cuda[0].replays == 3   # capture step + 2 more
    (again,) = region(function, torch.full((3,), 10.0), torch.ones(3))
    assert again[0].item() == 21.0 and len(calls) == region.WARMUP + 1


def test_other_shapes_get_their_own_graph(fake_cuda):
    region, calls, outputs = fgmix.CapturedRegion(), [], [torch.zeros(3)]
    function = doubling_into(outputs, calls)
    for _ in range(4):
        region(function, torch.ones(3), torch.ones(3))
    outputs[0] = torch.zeros(4)
    for _ in range(4):
        region(function, torch.ones(4), torch.ones(4))
    assert len(fake_cuda) == 2


def test_a_failed_capture_warns_once_and_stays_eager(fake_cuda, monkeypatch):
    @contextlib.contextmanager
    def broken(graph):
        raise RuntimeError("operation not permitted when stream is capturing")
        yield

    monkeypatch.setattr(torch.cuda, "graph", broken)
    region, calls, outputs = fgmix.CapturedRegion(), [], [torch.zeros(1)]
    function = doubling_into(outputs, calls)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values = [region(function, torch.full((1,), float(i)), torch.zeros(1))[0].item()
                  for i in range(5)]
    assert values == [0.0, 2.0, 4.0, 6.0, 8.0] and len(calls) == 5
    assert region.failed and len(caught) == 1 and "running eagerly" in str(caught[0].message)


def test_off_on_the_cpu_and_by_the_environment(monkeypatch):
    region = fgmix.CapturedRegion()
    assert not region.active(torch.zeros(1))                    # a CPU tensor
    monkeypatch.setenv("DOMAINBED_CUDA_GRAPHS", "0")
    fake_gpu_tensor = type("T", (), {"is_cuda": True})()
    assert not region.active(fake_gpu_tensor)
    monkeypatch.setenv("DOMAINBED_CUDA_GRAPHS", "1")
    assert region.active(fake_gpu_tensor)


def test_a_copied_or_pickled_algorithm_gets_an_empty_region():
    import copy
    import pickle

    region = fgmix.CapturedRegion()
    region._graphs["key"] = "a graph"
    assert copy.deepcopy(region)._graphs == {} and pickle.loads(pickle.dumps(region))._graphs == {}


def test_the_policy_optimizer_follows_the_regions_device(monkeypatch):
    """Capturable (step count on the device) only while captured; torch's default form
    otherwise, so a checkpoint from a GPU run resumes on a CPU."""
    from domainbed import hparams_registry

    hparams = hparams_registry.default_hparams("FGMix", "RotatedMNIST")
    algorithm = fgmix.FGMix((1, 28, 28), 10, 3, hparams)
    batch = [(torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))) for _ in range(3)]
    algorithm.update(batch)
    group = algorithm.policy_optimizer.param_groups[0]
    assert group["capturable"] is False
    monkeypatch.setattr(fgmix.CapturedRegion, "active", lambda self, tensor: True)
    algorithm._captured.prepare(algorithm, torch.zeros(1))
    assert group["capturable"] is True
    monkeypatch.undo()
    algorithm._captured.prepare(algorithm, torch.zeros(1))
    assert group["capturable"] is False
    step = algorithm.policy_optimizer.state[algorithm.policy_omega]["step"]
    assert step.device.type == "cpu" and step.dtype == torch.float32
    algorithm.update(batch)   # and it still steps
