"""Data loaders with upstream DomainBed's semantics, made resumable.

`InfiniteDataLoader` draws batches with replacement (or from sampling weights) forever.
The indices come from a generator the loader owns, and the loader counts the batches it
has handed out, so `state_dict()` / `load_state_dict()` restore the exact stream position
(exact resume) without touching the global RNG.

In-memory datasets (a `TensorDataset`, or split views of one) skip torch's DataLoader:
batches are gathered with one index operation. The indices, and so the batches, are the
ones the DataLoader would have produced item by item and stacked; only the per-item Python
overhead goes (it dominated small models' steps).
"""
import torch


def in_memory_tensors(dataset):
    """The (inputs, labels) tensors behind `dataset` when it is a two-tensor TensorDataset
    or a (nested) index view of one, gathered once; None for anything else (files,
    transforms), which then goes through the DataLoader."""
    from domainbed.lib.misc import _SplitDataset

    keys = None
    while isinstance(dataset, _SplitDataset):
        view = torch.as_tensor(dataset.keys, dtype=torch.long)
        keys = view if keys is None else view[keys]
        dataset = dataset.underlying_dataset
    if type(dataset) is not torch.utils.data.TensorDataset or len(dataset.tensors) != 2:
        return None
    if keys is None:
        return dataset.tensors
    return tuple(t[keys] for t in dataset.tensors)


class _InfiniteIndexBatches:
    """An endless iterable of index lists, drawn from a private generator."""

    def __init__(self, n_items, batch_size, weights, seed):
        self.n_items = n_items
        self.batch_size = batch_size
        self.weights = weights
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self):
        while True:
            yield self.draw()

    def draw(self):
        return self.draw_indices().tolist()

    def draw_indices(self):
        if self.weights is None:
            return torch.randint(self.n_items, (self.batch_size,), generator=self.generator)
        return torch.multinomial(self.weights, self.batch_size, replacement=True,
                                 generator=self.generator)


class ResumableStream:
    """What every training stream shares: an endless iterator (no length) whose position is
    (seed, batches handed out), its `state_dict`."""

    seed = 0
    batches_drawn = 0

    def __iter__(self):
        return self

    def __len__(self):
        raise ValueError("an InfiniteDataLoader has no length")

    def state_dict(self):
        return {"seed": self.seed, "batches_drawn": self.batches_drawn}

    def check_seed(self, state):
        if state["seed"] != self.seed:
            raise ValueError("data stream seed differs from the checkpoint's")


class InfiniteDataLoader(ResumableStream):
    def __init__(self, dataset, weights, batch_size, num_workers, seed=0):
        self.dataset = dataset
        self.seed = seed
        self.batches_drawn = 0
        self._index_batches = _InfiniteIndexBatches(len(dataset), batch_size, weights, seed)
        self._start_workers(num_workers)

    def _start_workers(self, num_workers):
        # Workers prefetch ahead of the training loop, so the position is counted where
        # batches are consumed (`__next__`), not where indices are drawn.
        self._num_workers = num_workers
        self._tensors = in_memory_tensors(self.dataset) if num_workers == 0 else None
        if self._tensors is not None:
            self._loader = self._gathered_batches()
            return
        self._loader = iter(torch.utils.data.DataLoader(
            self.dataset,
            num_workers=num_workers,
            batch_sampler=self._index_batches,
            persistent_workers=num_workers > 0,
        ))

    def _gathered_batches(self):
        inputs, labels = self._tensors
        while True:
            indices = self._index_batches.draw_indices()
            yield inputs[indices], labels[indices]

    def __next__(self):
        batch = next(self._loader)
        self.batches_drawn += 1
        return batch

    def load_state_dict(self, state):
        """Re-create the stream and skip the batches already consumed (indices only)."""
        self.check_seed(state)
        weights = self._index_batches.weights
        self._index_batches = _InfiniteIndexBatches(
            len(self.dataset), self._index_batches.batch_size, weights, self.seed)
        for _ in range(state["batches_drawn"]):
            self._index_batches.draw()
        self.batches_drawn = state["batches_drawn"]
        self._start_workers(self._num_workers)


class FastDataLoader:
    """One pass over the dataset in ceil(len / batch_size) batches (evaluation).

    Upstream shuffles the order; accuracy does not depend on it, so the order here is
    sequential. The loader draws its workers' seeds from a generator of its own (`seed`),
    never from the global RNG: evaluating does not change the training run's randomness.
    With workers, the next pass starts loading as soon as a pass ends (and the first at
    construction), so an evaluation finds its first batches ready, as upstream's loaders
    (which stream forever) do; without this, evaluation took 16 s of a 50 s PACS-shaped run
    on an H200 (docs/benchmarks.md).
    """

    def __init__(self, dataset, batch_size, num_workers, seed=0):
        self._length = (len(dataset) + batch_size - 1) // batch_size
        self._batch_size = batch_size
        self._tensors = in_memory_tensors(dataset) if num_workers == 0 else None
        self._next_pass = None
        if self._tensors is None:
            self._loader = torch.utils.data.DataLoader(
                dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                persistent_workers=num_workers > 0,
                generator=torch.Generator().manual_seed(seed))
            if num_workers > 0:
                self._next_pass = iter(self._loader)

    def __iter__(self):
        if self._tensors is None:
            return self._one_pass()
        inputs, labels = self._tensors
        return ((inputs[i:i + self._batch_size], labels[i:i + self._batch_size])
                for i in range(0, len(inputs), self._batch_size))

    def _one_pass(self):
        batches, self._next_pass = self._next_pass or iter(self._loader), None
        yield from batches
        if self._loader.num_workers > 0:   # the whole pass was read: load the next one now
            self._next_pass = iter(self._loader)

    def __len__(self):
        return self._length
