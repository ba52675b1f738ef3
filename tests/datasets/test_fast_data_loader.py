"""The in-memory fast path of the loaders gives the DataLoader's batches exactly."""
import torch
from torch.utils.data import TensorDataset

from domainbed.datasets import fast_data_loader as fdl
from domainbed.lib import misc


class NotATensorDataset(torch.utils.data.Dataset):
    """The same items, but a type the fast path must not recognise (DataLoader path)."""

    def __init__(self, base):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        return self.base[i]


def nested_split():
    generator = torch.Generator().manual_seed(0)
    base = TensorDataset(torch.randn(50, 3, generator=generator), torch.arange(50) % 4)
    _, rest = misc.split_dataset(base, 10, seed=1)
    inner, _ = misc.split_dataset(rest, 30, seed=2)
    slow = misc.split_dataset(misc.split_dataset(NotATensorDataset(base), 10, seed=1)[1],
                              30, seed=2)[0]
    return inner, slow


def test_in_memory_tensors_recognises_only_tensor_datasets():
    fast, slow = nested_split()
    inputs, labels = fdl.in_memory_tensors(fast)
    assert inputs.shape == (30, 3) and labels.shape == (30,)
    assert fdl.in_memory_tensors(slow) is None
    for i in (0, 7, 29):
        assert torch.equal(inputs[i], fast[i][0]) and labels[i] == fast[i][1]


def test_infinite_loader_fast_path_equals_dataloader_path():
    fast, slow = nested_split()
    weights = torch.rand(30, generator=torch.Generator().manual_seed(3))
    for w in (None, weights):
        a = fdl.InfiniteDataLoader(fast, w, batch_size=8, num_workers=0, seed=5)
        b = fdl.InfiniteDataLoader(slow, w, batch_size=8, num_workers=0, seed=5)
        assert a._tensors is not None and b._tensors is None
        for _ in range(6):
            (xa, ya), (xb, yb) = next(a), next(b)
            assert torch.equal(xa, xb) and torch.equal(ya, yb) and ya.dtype == yb.dtype


def test_infinite_loader_fast_path_resumes_exactly():
    fast, _ = nested_split()
    a = fdl.InfiniteDataLoader(fast, None, batch_size=4, num_workers=0, seed=9)
    for _ in range(3):
        next(a)
    state = a.state_dict()
    expected = [next(a) for _ in range(3)]
    b = fdl.InfiniteDataLoader(fast, None, batch_size=4, num_workers=0, seed=9)
    b.load_state_dict(state)
    for (xe, ye), (xb, yb) in zip(expected, [next(b) for _ in range(3)]):
        assert torch.equal(xe, xb) and torch.equal(ye, yb)


def test_fast_loader_fast_path_equals_dataloader_path():
    fast, slow = nested_split()
    a, b = fdl.FastDataLoader(fast, 7, 0), fdl.FastDataLoader(slow, 7, 0)
    batches_a, batches_b = list(a), list(b)
    assert len(batches_a) == len(batches_b) == len(a) == 5
    for (xa, ya), (xb, yb) in zip(batches_a, batches_b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


class Indexed(torch.utils.data.Dataset):
    """Items that say which item they are (for worker-loaded passes)."""

    def __len__(self):
        return 23

    def __getitem__(self, i):
        return torch.tensor([float(i)]), i


def test_evaluation_passes_with_workers_are_whole_in_order_and_leave_the_global_rng():
    """Each pass is every item once, in order, also when the next pass was started ahead
    (at construction and at the end of a pass) or a pass was abandoned half-way; and
    evaluating draws nothing from the global RNG (training's randomness stays the same)."""
    torch.manual_seed(5)
    before = torch.get_rng_state()
    loader = fdl.FastDataLoader(Indexed(), batch_size=5, num_workers=2, seed=3)
    for _ in range(2):
        labels = torch.cat([y for _, y in loader])
        assert labels.tolist() == list(range(23)) and len(loader) == 5
    half = iter(loader)
    next(half)                     # abandoned after one batch
    assert torch.cat([y for _, y in loader]).tolist() == list(range(23))
    assert torch.equal(torch.get_rng_state(), before)
