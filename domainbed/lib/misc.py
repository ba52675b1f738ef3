"""Small helpers shared by training and reporting, with upstream DomainBed's semantics.

Nothing here imports torch at module level: `collect_results` and `sweep status` use
`seed_hash` and `print_row` and must stay light. Helpers that need tensors import torch
inside the function.
"""
import difflib
import hashlib
import json
import os
import sys
from itertools import cycle

import numpy as np

from domainbed.lib import safe_write


def seed_hash(*args):
    """A stable 31-bit seed from any arguments: MD5 of `str(args)` modulo 2**31.

    The string form of the *tuple* is hashed, so types matter: pass native ints and
    lists (a numpy int or a tuple of test envs gives another seed, as upstream).
    """
    args_str = str(args)
    return int(hashlib.md5(args_str.encode("utf-8")).hexdigest(), 16) % (2**31)


def to_native(value):
    """Recursively turn numpy scalars/arrays into JSON-safe Python values."""
    if isinstance(value, dict):
        return {k: to_native(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_native(v) for v in value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def did_you_mean(name, choices):
    """' Did you mean X?' for the closest of `choices`, or ''."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    if not close:
        lowered = {str(c).lower(): str(c) for c in choices}
        if str(name).lower() in lowered:
            close = [lowered[str(name).lower()]]
    return f" Did you mean {close[0]!r}?" if close else ""


# ---------------------------------------------------------------------------------------
# Data splits and sampling weights

class _SplitDataset:
    """A view of `underlying_dataset` restricted to `keys` (upstream's index subset)."""

    def __init__(self, underlying_dataset, keys):
        self.underlying_dataset = underlying_dataset
        self.keys = keys

    def __getitem__(self, key):
        return self.underlying_dataset[self.keys[key]]

    def __len__(self):
        return len(self.keys)


def split_dataset(dataset, n, seed=0):
    """Return (first n shuffled items, the rest); the shuffle is RandomState(seed)."""
    assert n <= len(dataset)
    keys = list(range(len(dataset)))
    np.random.RandomState(seed).shuffle(keys)
    return _SplitDataset(dataset, keys[:n]), _SplitDataset(dataset, keys[n:])


def _dataset_labels(dataset):
    return [int(y) for _, y in dataset]


def make_weights_for_balanced_classes(dataset):
    """Per-item weight 1 / (count[y] * n_classes); the weights sum to 1."""
    import torch

    labels = _dataset_labels(dataset)
    counts = {}
    for y in labels:
        counts[y] = counts.get(y, 0) + 1
    n_classes = len(counts)
    weights = torch.zeros(len(labels))
    for i, y in enumerate(labels):
        weights[i] = 1.0 / (counts[y] * n_classes)
    return weights


def random_pairs_of_minibatches(minibatches, generator=None):
    """Pairs (perm[i], perm[i+1]) cyclically over a random domain permutation, equal sizes."""
    import torch

    perm = torch.randperm(len(minibatches), generator=generator).tolist()
    pairs = []
    for i in range(len(minibatches)):
        j = i + 1 if i < len(minibatches) - 1 else 0
        xi, yi = minibatches[perm[i]]
        xj, yj = minibatches[perm[j]]
        min_n = min(len(xi), len(xj))
        pairs.append(((xi[:min_n], yi[:min_n]), (xj[:min_n], yj[:min_n])))
    return pairs


def split_meta_train_test(minibatches, num_meta_test=1, generator=None):
    """MLDG's split: the last `num_meta_test` permuted domains are meta-test, cycled."""
    import torch

    n_domains = len(minibatches)
    perm = torch.randperm(n_domains, generator=generator).tolist()
    meta_train = perm[: n_domains - num_meta_test]
    meta_test = perm[-num_meta_test:]
    pairs = []
    for i, j in zip(meta_train, cycle(meta_test)):
        xi, yi = minibatches[i]
        xj, yj = minibatches[j]
        min_n = min(len(xi), len(xj))
        pairs.append(((xi[:min_n], yi[:min_n]), (xj[:min_n], yj[:min_n])))
    return pairs


# ---------------------------------------------------------------------------------------
# Evaluation

def accuracy(network, loader, weights, device):
    """Weighted accuracy of `network.predict` over `loader` (binary when 1 logit)."""
    import torch

    correct = 0.0
    total = 0.0
    weights_offset = 0
    network.eval()
    with torch.no_grad():
        for x, y in loader:
            x = x.to(device)
            y = y.to(device)
            p = network.predict(x)
            if weights is None:
                batch_weights = torch.ones(len(x))
            else:
                batch_weights = weights[weights_offset: weights_offset + len(x)]
                weights_offset += len(x)
            batch_weights = batch_weights.to(device)
            if p.size(1) == 1:
                correct += (p.gt(0).eq(y).float() * batch_weights.view(-1, 1)).sum().item()
            else:
                correct += (p.argmax(1).eq(y).float() * batch_weights).sum().item()
            total += batch_weights.sum().item()
    network.train()
    return correct / total


# ---------------------------------------------------------------------------------------
# Console and files

class Tee:
    """Write everything to a console stream and append it to the file `fname`: upstream's
    `Tee(fname, mode)` (the console is the current sys.stdout; errors raise).

    console: the stream echoed to. also: another Tee whose file gets a copy of everything
    (train.py's stderr goes into out.txt too). keep_going: logging never stops the program
    (train.py): a file that cannot be opened is left out, a file write that fails (a full
    disk) drops the file, a console write that fails is skipped."""

    def __init__(self, fname, mode="a", console=None, also=None, keep_going=False):
        self.stdout = sys.stdout if console is None else console
        self.also = also
        self.keep_going = keep_going
        self.file = None
        try:
            self.file = safe_write.open_file(fname, mode)   # never through a link
        except OSError:
            if not keep_going:
                raise

    def write(self, message):
        self._write(self.stdout, message)
        self.log_only(message)

    def log_only(self, message):
        """Into the file (and `also`'s), not the console."""
        for tee in (self, self.also):
            if tee is not None and tee.file is not None:
                tee._write(tee.file, message)

    def _write(self, stream, message):
        try:
            stream.write(message)
            stream.flush()
        except (OSError, ValueError):
            if not self.keep_going:
                raise
            if stream is self.file:
                self.close()

    def flush(self):
        pass  # every write is flushed

    def isatty(self):
        return False

    def close(self):
        if self.file is not None:
            try:
                self.file.close()
            except OSError:
                if not self.keep_going:
                    raise
            self.file = None


def format_cell(value, colwidth=10, latex=False):
    if isinstance(value, (float, np.floating)):
        text = "{:.10f}".format(value)
    else:
        text = str(value)
    return text.ljust(colwidth)[:colwidth]


def format_row(row, colwidth=10, latex=False):
    """The exact text `print_row` prints (without the trailing newline)."""
    sep = " & " if latex else "  "
    end = "\\\\" if latex else ""
    return sep.join(format_cell(x, colwidth) for x in row) + " " + end


def format_table(header, rows):
    """A plain-text table: columns left-aligned to their widest cell, a dashed rule under
    the header (the benchmark commands' tables)."""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(header, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def print_row(row, colwidth=10, latex=False):
    """Cells padded and truncated to `colwidth`; floats with 10 decimals; trailing space."""
    print(format_row(row, colwidth, latex))


def atomic_write(path, write):
    """`write(binary file)` into `path.tmp.<pid>`, synced, then renamed over `path`: the
    file is old or new, never torn; the temporary is removed when anything fails (e.g. a
    full disk). The one atomic writer: text, bytes and checkpoints all go through it, and
    through the write rule (`lib/safe_write.py`: never through a link)."""
    safe_write.atomic_write(path, write)


def atomic_write_text(path, text):
    """Write `text` (UTF-8) to `path` atomically (`atomic_write`)."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def append_json_line(path, record):
    """Append one whole JSON line (a single write, flushed and synced)."""
    line = json.dumps(to_native(record), sort_keys=True) + "\n"
    with safe_write.open_file(path, "a") as f:   # never through a link
        f.write(line)
        f.flush()
        os.fsync(f.fileno())
