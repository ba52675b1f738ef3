"""`--pipeline fast`: loaders over the decoded uint8 cache (`decoded_cache`) that hand out
batches already on the device, augmented there (`device_augment`).

`FastInfiniteLoader` and `FastEvalLoader` have the interfaces of `datasets.fast_data_loader`'s
`InfiniteDataLoader` and `FastDataLoader`: the training stream draws the SAME indices as
the default pipeline's for the same seed and weights (the same `_InfiniteIndexBatches`),
and its state is (seed, batches_drawn) as there; a batch's augmentation is drawn from a
generator seeded by the stream's seed and the batch's position, so resuming needs nothing
else. A background thread gathers the next uint8 batches from the memory-mapped cache and
copies them to the device (pinned, non-blocking), so the step never waits for a gather.

Which environments are augmented is upstream's rule (`image_folder.env_transforms`): the
training environments when hparams["data_augmentation"], in every split, evaluation
included; an augmented evaluation loader draws from a fixed seed (the same images at every
evaluation: accuracies are reproducible and resumable).
"""
import queue
import threading

import numpy as np
import torch

from domainbed.datasets import decoded_cache, device_augment
from domainbed.datasets.fast_data_loader import ResumableStream, _InfiniteIndexBatches
from domainbed.lib.misc import _SplitDataset

PREFETCH_DEPTH = 2        # batches gathered ahead of the training step
_POLL_S = 0.1             # how often a blocked prefetch thread checks that it is wanted


def split_rows(split, environments):
    """(environment index, int64 rows of that environment's cache) of a (nested)
    _SplitDataset view of one of `environments` (or of the environment itself)."""
    rows = None
    while isinstance(split, _SplitDataset):
        keys = np.asarray(split.keys, dtype=np.int64)
        rows = keys if rows is None else keys[rows]
        split = split.underlying_dataset
    for env_index, environment in enumerate(environments):
        if split is environment:
            return env_index, np.arange(len(environment)) if rows is None else rows
    raise ValueError("a split of the fast pipeline must be a view of one of the dataset's "
                     "environments")


def _to_device(array, device):
    tensor = torch.from_numpy(array)
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


class _Gather:
    """One environment's rows on the device: uint8 images, labels, original sizes."""

    def __init__(self, decoded, rows, device):
        self.decoded = decoded
        self.rows = rows
        self.device = device

    def __len__(self):
        return len(self.rows)

    def __call__(self, positions):
        """positions: indices into the split -> (uint8 images, labels) on the device and
        the original sizes (CPU, for drawing the crops)."""
        rows = self.rows[np.asarray(positions, dtype=np.int64)]
        images = _to_device(np.ascontiguousarray(self.decoded.images[rows]), self.device)
        labels = _to_device(self.decoded.labels[rows], self.device)
        return images, labels, torch.from_numpy(self.decoded.sizes[rows])


class _Prefetcher:
    """Runs `produce()` in a daemon thread, up to PREFETCH_DEPTH results ahead, until
    `close()` (or until produce raises StopIteration); an error reaches the consumer. The
    thread holds no reference to the prefetcher's owner, so an abandoned loader is freed
    (and its thread ends) by the garbage collector."""

    def __init__(self, produce):
        self._queue = queue.Queue(PREFETCH_DEPTH)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(produce, self._queue, self._stop),
                                        daemon=True, name="fast-pipeline-prefetch")
        self._thread.start()

    @staticmethod
    def _run(produce, results, stop):
        while not stop.is_set():
            try:
                item = ("batch", produce())
            except StopIteration:
                item = ("end", None)
            except BaseException as error:   # re-raised in the consumer's thread
                item = ("error", error)
            while not stop.is_set():
                try:
                    results.put(item, timeout=_POLL_S)
                    break
                except queue.Full:
                    continue
            if item[0] != "batch":
                return

    def next(self):
        kind, value = self._queue.get()
        if kind == "error":
            raise value
        if kind == "end":
            raise StopIteration
        return value

    def close(self):
        self._stop.set()
        self._thread.join()

    def __del__(self):
        self._stop.set()


def _finish(batch, augmented, seed, batch_index):
    """(images, labels, sizes) -> (normalised float images, labels), augmented or not."""
    images, labels, sizes = batch
    if not augmented:
        return device_augment.evaluate_batch(images), labels
    params = device_augment.draw_params(sizes, device_augment.batch_generator(seed, batch_index))
    return device_augment.augment_batch(images, params), labels


class FastInfiniteLoader(ResumableStream):
    """InfiniteDataLoader over the cache: the same indices, batches on the device."""

    def __init__(self, gather, weights, batch_size, seed, augmented):
        self.gather = gather
        self.seed = seed
        self.augmented = augmented
        self.batches_drawn = 0
        self._batch_size = batch_size
        self._weights = weights
        self._prefetcher = None

    def _produce_from(self, index_batches):
        gather = self.gather   # the thread must not hold `self`

        def produce():
            return gather(index_batches.draw_indices().numpy())
        return produce

    def _start(self):
        index_batches = _InfiniteIndexBatches(len(self.gather), self._batch_size, self._weights,
                                              self.seed)
        for _ in range(self.batches_drawn):
            index_batches.draw()
        self._prefetcher = _Prefetcher(self._produce_from(index_batches))

    def __next__(self):
        if self._prefetcher is None:
            self._start()
        batch = _finish(self._prefetcher.next(), self.augmented, self.seed, self.batches_drawn)
        self.batches_drawn += 1
        return batch

    def load_state_dict(self, state):
        """Continue after the batches already consumed (the thread restarts there)."""
        self.check_seed(state)
        self.close()
        self.batches_drawn = state["batches_drawn"]

    def close(self):
        if self._prefetcher is not None:
            self._prefetcher.close()
            self._prefetcher = None


class FastEvalLoader:
    """FastDataLoader over the cache: one sequential pass, batches on the device;
    augmented loaders draw every pass from the same `seed`."""

    def __init__(self, gather, batch_size, seed, augmented):
        self.gather = gather
        self.seed = seed
        self.augmented = augmented
        self._batch_size = batch_size

    def __len__(self):
        return (len(self.gather) + self._batch_size - 1) // self._batch_size

    def __iter__(self):
        gather, size, n = self.gather, self._batch_size, len(self.gather)
        starts = iter(range(0, n, size))

        def produce():
            start = next(starts)
            return gather(np.arange(start, min(start + size, n)))

        prefetcher = _Prefetcher(produce)
        try:
            for batch_index in range(len(self)):
                yield _finish(prefetcher.next(), self.augmented, self.seed, batch_index)
        finally:
            prefetcher.close()


class FastPipeline:
    """The decoded environments of an image-folder dataset and the rule of which of them
    are augmented; makes the loaders of its splits."""

    def __init__(self, dataset, test_envs, augment, device, workers):
        self.environments = dataset.datasets
        self.decoded = decoded_cache.load_environments(dataset, workers)
        self.augmented_envs = {i for i in range(len(self.environments))
                               if augment and i not in test_envs}
        self.device = device

    def _gather(self, split):
        env_index, rows = split_rows(split, self.environments)
        return env_index, _Gather(self.decoded[env_index], rows, self.device)

    def stream(self, split, weights, batch_size, seed):
        env_index, gather = self._gather(split)
        return FastInfiniteLoader(gather, weights, batch_size, seed,
                                  env_index in self.augmented_envs)

    def eval_loader(self, split, batch_size, seed):
        env_index, gather = self._gather(split)
        return FastEvalLoader(gather, batch_size, seed, env_index in self.augmented_envs)
