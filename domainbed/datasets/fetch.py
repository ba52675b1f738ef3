"""Fetching dataset archives: resumable downloads with mirrors, checksums, safe extraction.

Standard library plus tqdm; torch-free. A download goes to `<file>.part` and is renamed
only once complete and checked, so an interrupted run leaves a `.part` that the next run
continues with an HTTP Range request (or restarts when the server ignores Range) and never
a truncated archive under the final name.
"""
import gzip
import hashlib
import html
import http.client
import json
import os
import re
import shutil
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile

from domainbed.lib.misc import atomic_write_text

USER_AGENT = "domainbed-fgmix-download/1.0 (+python urllib)"
CHUNK_BYTES = 1 << 20
# Network failures worth retrying (the next try resumes from the .part file).
TRANSIENT_ERRORS = (OSError, http.client.HTTPException)  # URLError, timeouts, resets


class DownloadError(RuntimeError):
    """A file could not be fetched or unpacked; the message says what to do."""


class ChecksumError(DownloadError):
    """A downloaded file does not match its known or recorded checksum."""


def md5_of(path):
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def google_drive_url(file_id):
    # The usercontent endpoint with confirm=t skips the "cannot scan for viruses" page.
    return f"https://drive.usercontent.google.com/download?id={file_id}&export=download&confirm=t"


# ---------------------------------------------------------------------------------------
# The checksum record: DIR/.checksums.json

class ChecksumStore:
    """Size and md5 of each archive after its first download, and a summary of each
    installed dataset, so that `--verify` can tell a later change from the original."""

    FILENAME = ".checksums.json"

    def __init__(self, data_dir):
        self.path = os.path.join(data_dir, self.FILENAME)
        self.content = {"archives": {}, "datasets": {}}
        if os.path.exists(self.path):
            with open(self.path) as f:
                loaded = json.load(f)
            self.content["archives"].update(loaded.get("archives", {}))
            self.content["datasets"].update(loaded.get("datasets", {}))

    def archive(self, filename):
        return self.content["archives"].get(filename)

    def record_archive(self, filename, size, md5, url):
        self.content["archives"][filename] = {"size": size, "md5": md5, "url": url}
        self._save()

    def dataset(self, name):
        return self.content["datasets"].get(name)

    def record_dataset(self, name, summary):
        self.content["datasets"][name] = summary
        self._save()

    def _save(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        atomic_write_text(self.path, json.dumps(self.content, indent=2, sort_keys=True) + "\n")


# ---------------------------------------------------------------------------------------
# Transfers

def _local_path(source):
    """The filesystem path of a `file://` URL or a plain path; None for network URLs."""
    parsed = urllib.parse.urlparse(source)
    if parsed.scheme == "file":
        return urllib.request.url2pathname(parsed.path)
    if parsed.scheme == "":
        return source
    return None


def _open_local(path, offset):
    if not os.path.isfile(path):
        raise DownloadError(f"{path} does not exist")
    stream = open(path, "rb")
    stream.seek(offset)
    return stream, os.path.getsize(path), True


def _total_from_headers(response, resumed, offset):
    if resumed:  # "Content-Range: bytes 100-999/1000"
        match = re.search(r"/(\d+)\s*$", response.headers.get("Content-Range", ""))
        return int(match.group(1)) if match else None
    length = response.headers.get("Content-Length")
    return int(length) if length is not None else None


def _drive_confirmation_url(page, base_url):
    """The download URL of Google Drive's "file too large to scan" form, or None."""
    form = re.search(r'<form[^>]*action="([^"]+)"[^>]*>(.*?)</form>', page, re.S)
    if form is None:
        return None
    fields = dict(re.findall(r'<input[^>]*type="hidden"[^>]*name="([^"]+)"[^>]*value="([^"]*)"',
                             form.group(2)))
    action = urllib.parse.urljoin(base_url, html.unescape(form.group(1)))
    return f"{action}?{urllib.parse.urlencode(fields)}"


def _open_http(url, offset, timeout, follow_drive_form=True):
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # nothing left to send: the .part is complete
            return None, offset, True
        raise DownloadError(f"{url}: HTTP {error.code} {error.reason}") from error
    if "text/html" in response.headers.get("Content-Type", ""):
        page = response.read(1 << 20).decode("utf-8", "replace")
        response.close()
        confirm = _drive_confirmation_url(page, url) if follow_drive_form else None
        if confirm is None:
            raise DownloadError(f"{url} returned a web page instead of a file (the host may refuse "
                                "automated downloads or the file was moved)")
        return _open_http(confirm, offset, timeout, follow_drive_form=False)
    resumed = offset > 0 and response.status == 206
    return response, _total_from_headers(response, resumed, offset), resumed


def open_source(source, offset, timeout):
    """(stream or None, total size or None, resumed) reading `source` from byte `offset` when
    the source allows it; `resumed` False means the stream starts at byte 0."""
    path = _local_path(source)
    if path is not None:
        return _open_local(path, offset)
    return _open_http(source, offset, timeout)


def _transfer(source, part, timeout, progress, label):
    from tqdm import tqdm

    offset = os.path.getsize(part) if os.path.exists(part) else 0
    stream, total, resumed = open_source(source, offset, timeout)
    if stream is None:
        return
    if not resumed:
        offset = 0
    with stream, open(part, "ab" if resumed else "wb") as out, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
            desc=label, file=sys.stderr, disable=not progress, leave=False) as bar:
        for block in iter(lambda: stream.read(CHUNK_BYTES), b""):
            out.write(block)
            bar.update(len(block))
    size = os.path.getsize(part)
    if total is not None and size < total:
        raise DownloadError(f"{source}: connection closed at {size} of {total} bytes")


def _transfer_with_retries(source, part, timeout, progress, attempts, retry_wait):
    label = os.path.basename(part)[: -len(".part")]
    for attempt in range(1, attempts + 1):
        try:
            return _transfer(source, part, timeout, progress, label)
        except DownloadError as error:
            if "connection closed" not in str(error) or attempt == attempts:
                raise
        except TRANSIENT_ERRORS as error:
            if attempt == attempts:
                raise DownloadError(f"{source}: {error}") from error
        time.sleep(retry_wait * attempt)


def _accept_existing(dest, md5, store, filename):
    """True when `dest` is already complete (its md5 matches the known or recorded one)."""
    if not os.path.exists(dest):
        return False
    recorded = store.archive(filename) if store else None
    expected = md5 or (recorded or {}).get("md5")
    if expected is None:
        if store is not None:  # e.g. placed by hand: record it from now on
            store.record_archive(filename, os.path.getsize(dest), md5_of(dest), "existing file")
        return True
    if md5_of(dest) == expected:
        return True
    os.remove(dest)  # damaged or replaced: fetch it again
    return False


def download_file(sources, dest, md5=None, store=None, timeout=60, progress=True,
                  attempts=3, retry_wait=2.0):
    """Fetch `dest` from the first working source (URLs, `file://` URLs or paths).

    With a known `md5` a mismatch raises ChecksumError; without one the size and md5 are
    recorded in `store` at the first download and checked on later ones.
    """
    filename = os.path.basename(dest)
    if _accept_existing(dest, md5, store, filename):
        return dest
    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    part = dest + ".part"
    failures = []
    for source in sources:  # mirrors in order; a bad checksum also moves on to the next one
        try:
            _transfer_with_retries(source, part, timeout, progress, attempts, retry_wait)
            _check_and_record(part, filename, md5, store, source)
        except DownloadError as error:
            failures.append(error)
            continue
        os.replace(part, dest)
        return dest
    error_type = ChecksumError if any(isinstance(e, ChecksumError) for e in failures) else DownloadError
    raise error_type(f"could not download {filename}: " + "; ".join(map(str, failures)))


def _check_and_record(part, filename, md5, store, source):
    digest = md5_of(part)
    recorded = store.archive(filename) if store else None
    expected = md5 or (recorded or {}).get("md5")
    if expected is not None and digest != expected:
        os.remove(part)  # a wrong file must not be resumed either
        origin = "known" if md5 else f"recorded in {store.path}"
        raise ChecksumError(f"{filename} from {source} has md5 {digest}, expected {expected} "
                            f"({origin}); the download was removed, retry or use another source")
    if store is not None and recorded is None:
        store.record_archive(filename, os.path.getsize(part), digest, source)


# ---------------------------------------------------------------------------------------
# Extraction

def _check_inside(destination, member_name):
    root = os.path.realpath(destination)
    target = os.path.realpath(os.path.join(destination, member_name))
    if os.path.commonpath([root, target]) != root:
        raise DownloadError(f"refusing to extract {member_name!r}: it points outside {destination}")


def extract(archive, destination):
    """Unpack a zip, a tar (any compression) or a single .gz file into `destination`."""
    os.makedirs(destination, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zipped:
            for name in zipped.namelist():
                _check_inside(destination, name)
            zipped.extractall(destination)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tarred:
            for member in tarred.getmembers():
                _check_inside(destination, member.name)
                if member.issym() or member.islnk():  # links could point anywhere
                    _check_inside(destination, os.path.join(os.path.dirname(member.name),
                                                            member.linkname))
            # The "data" filter exists from Python 3.11.4/3.12 (and some 3.8-3.10 patch
            # releases); older ones rely on the checks above.
            if hasattr(tarfile, "data_filter"):
                tarred.extractall(destination, filter="data")
            else:
                tarred.extractall(destination)
    elif archive.endswith(".gz"):
        target = os.path.join(destination, os.path.basename(archive)[: -len(".gz")])
        with gzip.open(archive, "rb") as source, open(target, "wb") as out:
            shutil.copyfileobj(source, out, CHUNK_BYTES)
    else:
        raise DownloadError(f"{archive} is not a zip, tar or gzip archive; delete it and retry")
