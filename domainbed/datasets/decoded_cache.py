"""Every image of an image-folder environment decoded once, for `--pipeline fast`.

An environment (torchvision's ImageFolder or `folder.ImageList`: `.samples` = [(path,
label)]) becomes one raw uint8 file of [N, 3, 224, 224] images (PIL, RGB, resized with
upstream's eval resize, `transforms.Resize((224, 224))`, i.e. PIL bilinear) and a JSON index
beside it: the paths, labels, each image's ORIGINAL (width, height) (the training crop is
drawn in that geometry) and the fingerprint of the sources (path, size, mtime_ns, inode,
ctime_ns). The last two are what verifies the content: any write to a file, or a file
put in its place (`cp -p`, `rsync -t`, an archive extracted again, all of which can keep
the size and the old mtime), gives it a new ctime the kernel sets and nobody can set back,
or a new inode; a stat costs nothing, where hashing every image would read the whole
dataset at every start.

Where: $DOMAINBED_CACHE, else ~/.cache/domainbed/decoded (never the data directory); the
file name is a hash of the fingerprint. Both files are written to temporaries and renamed,
the index last, so a reader sees a whole cache or none. One job at a time builds a cache
(an advisory lock, `<cache>.lock`, that the kernel drops if its holder dies): the jobs a
sweep starts together wait for it and reuse it instead of each decoding it again. A cache
whose index does not match the sources, whose file has the wrong size or whose sampled
checksum differs is rebuilt, never trusted. When a source changes, the new cache replaces
the old one's files (same paths, another fingerprint).
"""
import concurrent.futures
import contextlib
import errno
import fcntl
import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import time
import uuid
import zlib

import numpy as np

from domainbed import settings
from domainbed.errors import BadInput
from domainbed.lib import safe_write
from domainbed.lib.misc import atomic_write_text

FORMAT_VERSION = 1
SIZE = 224
IMAGE_SHAPE = (3, SIZE, SIZE)
IMAGE_BYTES = 3 * SIZE * SIZE
CHUNK = 64                # images per decoding task
CHECKSUM_SAMPLES = 64     # images read back to check the file on every load


class CacheError(BadInput, OSError):
    """A decoded-cache problem the user fixes (its message says how): refused as bad input
    before anything of the job is written (exit 2)."""


class CacheDirError(CacheError):
    """The cache directory ($DOMAINBED_CACHE) cannot be made or written."""

    def __init__(self, message):
        super().__init__(message)
        self.errno = errno.EACCES


class CacheSpaceError(CacheError):
    """Too little room in the cache directory for the images still to decode; the message
    says how much is needed and what to do."""

    def __init__(self, message):
        super().__init__(message)
        self.errno = errno.ENOSPC


def cache_dir():
    return settings.cache_dir() or os.path.join(
        os.path.expanduser("~"), ".cache", "domainbed", "decoded")


def _cache_dir_message(directory, reason):
    where = ("DOMAINBED_CACHE=" + directory if settings.cache_dir()
             else f"the decoded cache's directory {directory} (DOMAINBED_CACHE is not set)")
    return (f"{where} cannot be used ({reason}); set DOMAINBED_CACHE to a writable "
            "directory, or run with --pipeline default")


def usable_cache_dir():
    """cache_dir(), made if needed; CacheDirError (naming DOMAINBED_CACHE) when it is a
    file, a dangling link, or a place we cannot write."""
    directory = cache_dir()
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as error:
        reason = ("a file or a dangling link is in the way" if os.path.lexists(directory)
                  else error.strerror)
        raise CacheDirError(_cache_dir_message(directory, reason)) from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise CacheDirError(_cache_dir_message(directory, "it is not writable"))
    return directory


def fingerprint(samples):
    """[[path, label, size, mtime_ns, inode, ctime_ns]] of the sources (stat only, nothing
    is read): a changed file has another ctime or inode (see the top of this module)."""
    entries = []
    for path, label in samples:
        stat = os.stat(path)
        entries.append([os.path.abspath(path), int(label), stat.st_size, stat.st_mtime_ns,
                        stat.st_ino, stat.st_ctime_ns])
    return entries


def _digest(value):
    return hashlib.sha256(json.dumps(value).encode("utf-8")).hexdigest()[:32]


def _source_key(samples):
    """The same for the same paths and labels, whatever their contents."""
    return _digest([FORMAT_VERSION, [[os.path.abspath(p), int(y)] for p, y in samples]])


class DecodedImages:
    """One environment's decoded images: `images` a read-only uint8 memmap [N, 3, 224, 224],
    `labels` int64 [N], `sizes` int64 [N, 2] (original width, height), `path` the data file."""

    def __init__(self, path, index):
        self.path = path
        self.images = np.memmap(path, dtype=np.uint8, mode="r",
                                shape=(index["count"],) + IMAGE_SHAPE)
        self.labels = np.asarray(index["labels"], dtype=np.int64)
        self.sizes = np.asarray(index["sizes"], dtype=np.int64).reshape(-1, 2)

    def __len__(self):
        return len(self.labels)

    @property
    def nbytes(self):
        return len(self) * IMAGE_BYTES


# ---------------------------------------------------------------------------------------
# Decoding (worker processes write straight into the temporary data file)

def decode_image(path):
    """(uint8 [3, 224, 224], (width, height)): what eval_transform's Resize sees."""
    from PIL import Image, ImageFile

    ImageFile.LOAD_TRUNCATED_IMAGES = True   # as the datasets (allow_truncated_images)
    with open(path, "rb") as f:
        image = Image.open(f).convert("RGB")
    resized = image.resize((SIZE, SIZE), Image.BILINEAR)   # = transforms.Resize((224, 224))
    return np.asarray(resized, dtype=np.uint8).transpose(2, 0, 1), image.size


def _decode_chunk(data_path, count, start, paths):
    images = np.memmap(data_path, dtype=np.uint8, mode="r+", shape=(count,) + IMAGE_SHAPE)
    sizes = []
    for offset, path in enumerate(paths):
        images[start + offset], size = decode_image(path)
        sizes.append(size)
    images.flush()
    return start, sizes


def _pool_context():
    # fork is cheap (no re-import of torch) but unsafe once CUDA is initialised.
    import torch

    if "fork" in multiprocessing.get_all_start_methods() and not torch.cuda.is_initialized():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _chunks(paths):
    return [(start, paths[start:start + CHUNK]) for start in range(0, len(paths), CHUNK)]


def _decode_all(data_path, paths, workers, label):
    """Decode `paths` into the data file; returns the original sizes. A progress bar on a
    terminal, else a line every tenth of the work."""
    from domainbed.lib.progress import progress

    count, sizes = len(paths), [None] * len(paths)
    chunks = _chunks(paths)
    workers = max(1, min(workers, len(chunks), os.cpu_count() or 1))
    if workers == 1:
        done = (_decode_chunk(data_path, count, start, part) for start, part in chunks)
        _collect(progress(done, total=len(chunks), desc=label, unit="chunk"), sizes, label,
                 len(chunks))
        return sizes
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=_pool_context()) as pool:
        futures = [pool.submit(_decode_chunk, data_path, count, start, part)
                   for start, part in chunks]
        done = (future.result() for future in concurrent.futures.as_completed(futures))
        _collect(progress(done, total=len(chunks), desc=label, unit="chunk"), sizes, label,
                 len(chunks))
    return sizes


def _collect(results, sizes, label, n_chunks):
    report_every = max(1, n_chunks // 10)
    for finished, (start, chunk_sizes) in enumerate(results, 1):
        sizes[start:start + len(chunk_sizes)] = chunk_sizes
        if n_chunks >= 20 and finished % report_every == 0:
            print(f"{label}: {100 * finished // n_chunks}%", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# Reading, checking and writing the cache

def _sample_checksum(images):
    """CRC32 of up to CHECKSUM_SAMPLES evenly spaced images (cheap on any size)."""
    rows = np.unique(np.linspace(0, len(images) - 1, min(len(images), CHECKSUM_SAMPLES))
                     .astype(np.int64)) if len(images) else []
    crc = 0
    for row in rows:
        crc = zlib.crc32(np.ascontiguousarray(images[row]).tobytes(), crc)
    return crc


def _read_index(index_path, sources):
    """The index when it describes `sources` exactly, else None."""
    try:
        with open(index_path, encoding="utf-8") as f:
            index = json.load(f)
        matches = (index["version"] == FORMAT_VERSION and index["fingerprint"] == sources
                   and index["count"] == len(sources) == len(index["labels"])
                   == len(index["sizes"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return index if matches else None


def _load_checked(stem, sources):
    """The DecodedImages at `stem` when its index matches and its file is whole, else None."""
    index = _read_index(stem + ".json", sources)
    if index is None:
        return None
    try:
        if os.path.getsize(stem + ".u8") != index["count"] * IMAGE_BYTES:
            return None
        decoded = DecodedImages(stem + ".u8", index)
    except (OSError, ValueError):
        return None
    return decoded if _sample_checksum(decoded.images) == index["checksum"] else None


def _temporary(path):
    return f"{path}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"


def _remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _remove_superseded(directory, source_key, keep_stem):
    """Delete the caches of the same sources with another fingerprint (stale: an image
    changed). A job still reading one keeps its open file (POSIX)."""
    for name in os.listdir(directory):
        if not name.endswith(".json") or os.path.join(directory, name[:-5]) == keep_stem:
            continue
        try:
            with open(os.path.join(directory, name), encoding="utf-8") as f:
                stale = json.load(f).get("source_key") == source_key
        except (OSError, ValueError, AttributeError):
            continue
        if stale:
            for extension in (".u8", ".json", ".lock"):
                _remove(os.path.join(directory, name[:-5] + extension))


def _build(stem, samples, sources, workers, label):
    data_path = stem + ".u8"
    temporary = _temporary(data_path)
    paths = [path for path, _ in samples]
    try:
        with safe_write.open_file(temporary, "wb") as f:
            f.truncate(len(paths) * IMAGE_BYTES)
        sizes = _decode_all(temporary, paths, workers, label)
        images = np.memmap(temporary, dtype=np.uint8, mode="r",
                           shape=(len(paths),) + IMAGE_SHAPE)
        checksum = _sample_checksum(images)
        del images
        with open(temporary, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(temporary, data_path)
    finally:
        _remove(temporary)
    index = {"version": FORMAT_VERSION, "count": len(paths), "shape": list(IMAGE_SHAPE),
             "source_key": _source_key(samples), "fingerprint": sources,
             "paths": [entry[0] for entry in sources],
             "labels": [entry[1] for entry in sources],
             "sizes": [list(size) for size in sizes], "checksum": checksum}
    atomic_write_text(stem + ".json", json.dumps(index))
    return DecodedImages(data_path, index)


def _cached(directory, samples):
    """(stem, sources, DecodedImages or None): where `samples`' cache is, and it if valid."""
    sources = fingerprint(samples)
    stem = os.path.join(directory, _digest([FORMAT_VERSION, SIZE, sources]))
    return stem, sources, _load_checked(stem, sources)


def _space_message(directory, needed, free, what):
    return (f"the decoded cache of --pipeline fast needs {needed / 1e9:.1f} GB for {what} in "
            f"{directory}, which has {free / 1e9:.1f} GB free: set DOMAINBED_CACHE to a "
            f"directory on a larger disk, or run with --pipeline default")


def check_free_space(directory, needed, what):
    """Refuse (CacheSpaceError) before decoding when `needed` bytes do not fit."""
    free = shutil.disk_usage(directory).free
    if needed > free:
        raise CacheSpaceError(_space_message(directory, needed, free, what))


def _try_lock(lock):
    """Take the exclusive flock of the open file `lock` if no one holds it; True if taken."""
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def _building(stem, label):
    """Hold `stem`'s build lock; says so on stderr when another job holds it first."""
    with safe_write.open_file(stem + ".lock", "a") as lock:
        if not _try_lock(lock):
            print(f"{label}: another job is building this cache; waiting for it",
                  file=sys.stderr, flush=True)
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _being_built(stem):
    """Whether another job holds `stem`'s build lock now."""
    if not os.path.exists(stem + ".lock"):
        return False
    with safe_write.open_file(stem + ".lock", "a") as lock:
        if not _try_lock(lock):
            return True
        fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
    return False


def _build_checked(directory, stem, samples, sources, workers, label):
    """(DecodedImages, built): the cache another job finished while this one waited for
    the lock, else built here, with a full disk (checked before, or met on the way)
    reported as one CacheSpaceError; the temporary file is gone either way."""
    try:
        return _build_locked(directory, stem, samples, sources, workers, label)
    except CacheError:
        raise
    except OSError as error:   # a read-only place, a file system without room for a lock
        if error.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        raise CacheDirError(_cache_dir_message(directory, error.strerror)) from None


def _build_locked(directory, stem, samples, sources, workers, label):
    needed, what = len(samples) * IMAGE_BYTES, f"{len(samples)} images"
    with _building(stem, label):
        decoded = _load_checked(stem, sources)
        if decoded is not None:
            return decoded, False
        check_free_space(directory, needed, what)
        try:
            decoded = _build(stem, samples, sources, workers, label)
        except OSError as error:
            if getattr(error, "errno", None) not in (errno.ENOSPC, errno.EDQUOT):
                raise
            free = shutil.disk_usage(directory).free
            raise CacheSpaceError(_space_message(directory, needed, free, what)) from None
    _remove_superseded(directory, _source_key(samples), stem)
    return decoded, True


def load_or_build(samples, workers=1, label="decoding"):
    """The decoded images of `samples` [(path, label)], from the cache when it is valid,
    else decoded now (`workers` processes) and cached. Returns (DecodedImages, built)."""
    directory = usable_cache_dir()
    stem, sources, decoded = _cached(directory, samples)
    if decoded is not None:
        return decoded, False
    return _build_checked(directory, stem, samples, sources, workers, label)


def load_environments(dataset, workers):
    """DecodedImages for each environment of an image-folder dataset (built when needed),
    and one line per environment saying where its cache is and how big it is. The room for
    every environment still to decode is checked before the first is decoded (DomainNet's
    cache is ~88 GB, hours of decoding); a cache another job is building is waited for,
    and its room is that job's."""
    directory = usable_cache_dir()
    found = [_cached(directory, env.samples) for env in dataset.datasets]
    missing = [len(env.samples) for env, (stem, _, cached) in zip(dataset.datasets, found)
               if cached is None and not _being_built(stem)]
    check_free_space(directory, sum(missing) * IMAGE_BYTES,
                     f"{sum(missing)} images of {len(missing)} environments")
    decoded = []
    for i, (env, (stem, sources, images)) in enumerate(zip(dataset.datasets, found)):
        start = time.time()
        built = False
        if images is None:
            images, built = _build_checked(directory, stem, env.samples, sources, workers,
                                           f"decoding env {i}")
        what = (f"built in {time.time() - start:.1f}s, "
                f"{len(images) / max(time.time() - start, 1e-9):.0f} images/s"
                if built else "reused")
        print(f"Decoded cache env {i}: {images.path} ({len(images)} images, "
              f"{images.nbytes / 1e6:.1f} MB, {what})", file=sys.stderr, flush=True)
        decoded.append(images)
    return decoded
