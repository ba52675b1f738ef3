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
import zlib

from domainbed.errors import EXIT_BAD_INPUT, EXIT_FAILURE, DomainBedError
from domainbed.lib import safe_write
from domainbed.lib.misc import atomic_write_text

USER_AGENT = "domainbed-fgmix-download/1.0 (+python urllib)"
CHUNK_BYTES = 1 << 20
# Network failures worth retrying (the next try resumes from the .part file).
TRANSIENT_ERRORS = (OSError, http.client.HTTPException)  # URLError, timeouts, resets


class DownloadError(DomainBedError, RuntimeError):
    """A file could not be fetched or unpacked; the message says what to do."""

    exit_code = EXIT_FAILURE   # a network failure: rerunning resumes


class ChecksumError(DownloadError):
    """A downloaded file does not match its known or recorded checksum."""

    exit_code = EXIT_BAD_INPUT


class BadArchiveError(DownloadError):
    """An archive that is damaged, of an unknown kind, or not the dataset's."""

    exit_code = EXIT_BAD_INPUT


class UnsafeArchiveError(BadArchiveError):
    """An archive member that would be written outside the destination (absolute names,
    `..`, links pointing out, hard links to anything but an earlier member, devices)."""


class ChecksumStoreError(DownloadError):
    """DIR/.checksums.json cannot be read; it is never overwritten then."""

    exit_code = EXIT_BAD_INPUT


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
        if os.path.lexists(self.path):
            loaded = self._load()
            self.content["archives"].update(loaded.get("archives", {}))
            self.content["datasets"].update(loaded.get("datasets", {}))

    def _load(self):
        def damaged(why):
            return ChecksumStoreError(
                f"{self.path} is damaged ({why}); move it away (it is rebuilt from the next "
                "downloads; a dataset's recorded summary is lost) and rerun")
        try:
            if not os.path.isfile(self.path):
                raise damaged("not a regular file")
            with open(self.path, "rb") as f:
                loaded = json.loads(f.read().decode("utf-8"))
        except (OSError, ValueError, RecursionError) as e:
            raise damaged(f"{type(e).__name__}: {e}") from None
        if not isinstance(loaded, dict):
            raise damaged("not a JSON object")
        for section in ("archives", "datasets"):
            entries = loaded.get(section, {})
            if not isinstance(entries, dict) or not all(isinstance(v, dict) for v in entries.values()):
                raise damaged(f"its {section!r} is not an object of objects")
        for name, entry in loaded.get("archives", {}).items():
            if not isinstance(entry.get("md5"), str):
                raise damaged(f"archive {name!r} has no md5")
        return loaded

    def archive(self, filename):
        return self.content["archives"].get(filename)

    def record_archive(self, filename, size, md5, url):
        self.content["archives"][filename] = {"size": size, "md5": md5, "url": url}
        self._save()

    def forget_archive(self, filename):
        if self.content["archives"].pop(filename, None) is not None:
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
    with stream, safe_write.open_file(part, "ab" if resumed else "wb") as out, tqdm(
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


def _expected_md5(md5, store, filename, trust_recorded):
    recorded = store.archive(filename) if store and trust_recorded else None
    return md5 or (recorded or {}).get("md5")


def _accept_existing(dest, md5, store, filename, pending, trust_recorded):
    """True when `dest` is already complete (its md5 matches the known or recorded one)."""
    if not os.path.exists(dest):
        return False
    expected = _expected_md5(md5, store, filename, trust_recorded)
    if expected is None:
        _record(store, pending, filename, dest, "existing file")  # e.g. placed by hand
        return True
    if md5_of(dest) == expected:
        return True
    os.remove(dest)  # damaged or replaced: fetch it again
    return False


def _record(store, pending, filename, path, source):
    if store is None:
        return
    entry = (filename, os.path.getsize(path), md5_of(path), source)
    if pending is not None:
        pending.append(entry)   # recorded by the caller once the dataset installed
    else:
        store.record_archive(*entry)


def download_file(sources, dest, md5=None, store=None, timeout=60, progress=True,
                  attempts=3, retry_wait=2.0, pending=None, trust_recorded=True):
    """Fetch `dest` from the first working source (URLs, `file://` URLs or paths).

    With a known `md5` a mismatch raises ChecksumError; without one the size and md5 are
    recorded in `store` at the first download and checked on later ones. With a list as
    `pending`, new records go there instead of into the store (the download script records
    them only after the dataset installed: a wrong first file must not be trusted). With
    `trust_recorded` False a recorded (unpublished) md5 is not checked (`--force`).
    """
    filename = os.path.basename(dest)
    if _accept_existing(dest, md5, store, filename, pending, trust_recorded):
        return dest
    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    part = dest + ".part"
    failures = []
    for source in sources:  # mirrors in order; a bad checksum also moves on to the next one
        try:
            _transfer_with_retries(source, part, timeout, progress, attempts, retry_wait)
            _check(part, filename, md5, store, source, trust_recorded)
        except DownloadError as error:
            failures.append(error)
            continue
        if store is not None and _expected_md5(md5, store, filename, trust_recorded) is None:
            _record(store, pending, filename, part, source)
        os.replace(part, dest)
        return dest
    error_type = ChecksumError if any(isinstance(e, ChecksumError) for e in failures) else DownloadError
    raise error_type(f"could not download {filename}: " + "; ".join(map(str, failures)))


def _check(part, filename, md5, store, source, trust_recorded):
    digest = md5_of(part)
    expected = _expected_md5(md5, store, filename, trust_recorded)
    if expected is not None and digest != expected:
        os.remove(part)  # a wrong file must not be resumed either
        if md5:
            advice = "the download was removed; retry, or pass another --source"
            origin = "published"
        else:
            origin = f"recorded in {store.path} at its first download"
            advice = ("the download was removed; if this file is the right one (e.g. the host "
                      "updated it), rerun with --force, which replaces the record")
        raise ChecksumError(f"{filename} from {source} has md5 {digest}, expected {expected} "
                            f"({origin}); {advice}")


# ---------------------------------------------------------------------------------------
# Extraction: member by member, never outside the destination, on every Python version
# (no reliance on tarfile's `data` filter, which Python 3.10.0-3.10.11 and 3.11.0-3.11.3 lack)

def _member_path(name):
    """An archive member's name as a relative path; UnsafeArchiveError for an absolute name,
    a `..` component or a NUL byte."""
    if not name or "\x00" in name or name.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", name):
        raise UnsafeArchiveError(f"member {name!r} has an absolute or empty name (it would "
                                 "be written outside the destination)")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"member {name!r} has a '..' component (it would be written "
                                 "outside the destination)")
    if not parts:
        return None   # the archive's root itself ("./")
    return os.path.join(*parts)


class _SafeExtractor:
    """Writes members under `destination`, checking each target against the links already
    extracted: a parent path that resolves outside is refused, links are checked both as
    written and as resolved on disk, and nothing is ever written through a link."""

    def __init__(self, destination):
        os.makedirs(destination, exist_ok=True)
        self.destination = destination
        self.root = os.path.realpath(destination)
        self.regular_files = set()   # member paths extracted as regular files

    def _inside(self, path):
        return os.path.commonpath([self.root, path]) == self.root

    def _target(self, relpath, name):
        target = os.path.join(self.root, relpath)
        parent = self.root
        for part in relpath.split(os.sep)[:-1]:   # nothing is written through a link
            parent = os.path.join(parent, part)
            if os.path.islink(parent):
                raise UnsafeArchiveError(
                    f"member {name!r} goes through the link "
                    f"{os.path.relpath(parent, self.root)!r} -> {os.readlink(parent)!r} "
                    "extracted before it (nothing is written through a link)")
        if not self._inside(os.path.realpath(os.path.dirname(target))):
            raise UnsafeArchiveError(f"member {name!r} would be written outside "
                                     f"{self.destination} (through a link)")
        return target

    def _clear(self, target, name):
        """Remove a file or link in the way (never a directory, never through a link)."""
        if os.path.islink(target) or os.path.isfile(target):
            os.unlink(target)
        elif os.path.lexists(target):
            raise UnsafeArchiveError(f"member {name!r} would replace a directory or device")

    def directory(self, relpath, name):
        target = self._target(relpath, name)
        if os.path.islink(target) or (os.path.lexists(target) and not os.path.isdir(target)):
            raise UnsafeArchiveError(f"directory member {name!r} would replace a file or link")
        os.makedirs(target, exist_ok=True)

    def file(self, relpath, name, source, mode=0o644):
        target = self._target(relpath, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        self._clear(target, name)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                     0o755 if mode & 0o111 else 0o644)
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(source, out, CHUNK_BYTES)
        self.regular_files.add(relpath)

    def symlink(self, relpath, name, linkname):
        if not linkname or os.path.isabs(linkname) or "\x00" in linkname:
            raise UnsafeArchiveError(f"link {name!r} -> {linkname!r} is absolute (it could point "
                                     f"outside {self.destination})")
        lexical = os.path.normpath(os.path.join(os.path.dirname(relpath), linkname))
        target = self._target(relpath, name)
        resolved = os.path.realpath(os.path.join(os.path.dirname(target), linkname))
        if lexical == ".." or lexical.startswith(".." + os.sep) or not self._inside(resolved):
            raise UnsafeArchiveError(f"link {name!r} -> {linkname!r} points outside "
                                     f"{self.destination}")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        self._clear(target, name)
        os.symlink(linkname, target)

    def hardlink(self, relpath, name, linkname):
        source = _member_path(linkname)
        if source is None or source not in self.regular_files:
            raise UnsafeArchiveError(f"hard link {name!r} -> {linkname!r} is not to an earlier "
                                     "regular file of the archive")
        source_path = os.path.join(self.root, source)
        if os.path.islink(source_path) or not self._inside(os.path.realpath(source_path)):
            raise UnsafeArchiveError(f"hard link {name!r} -> {linkname!r} points outside "
                                     f"{self.destination}")
        with open(source_path, "rb") as data:   # a copy: no inode shared with anything
            self.file(relpath, name, data)

    def check_links(self):
        """After the last member: every link still resolves inside (a later link can change
        where an earlier one points); escaping ones are removed and the archive refused."""
        escaping = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            for entry in dirnames + filenames:
                path = os.path.join(dirpath, entry)
                if os.path.islink(path) and not self._inside(os.path.realpath(path)):
                    escaping.append(path)
        for path in escaping:
            os.unlink(path)
        if escaping:
            raise UnsafeArchiveError(f"link {os.path.relpath(escaping[0], self.root)!r} points "
                                     f"outside {self.destination} once the archive is unpacked")


def _extract_tar(archive, destination):
    extractor = _SafeExtractor(destination)
    with tarfile.open(archive) as tarred:
        for member in tarred:   # streamed: each member is checked against what is on disk
            relpath = _member_path(member.name)
            if relpath is None:
                continue
            if member.isdir():
                extractor.directory(relpath, member.name)
            elif member.isreg():
                with tarred.extractfile(member) as source:
                    extractor.file(relpath, member.name, source, member.mode)
            elif member.issym():
                extractor.symlink(relpath, member.name, member.linkname)
            elif member.islnk():
                extractor.hardlink(relpath, member.name, member.linkname)
            else:
                raise UnsafeArchiveError(f"member {member.name!r} is a device, FIFO or other "
                                         "special file")
    extractor.check_links()


def _extract_zip(archive, destination):
    extractor = _SafeExtractor(destination)
    with zipfile.ZipFile(archive) as zipped:
        for info in zipped.infolist():
            relpath = _member_path(info.filename)
            if relpath is None:
                continue
            if info.is_dir():
                extractor.directory(relpath, info.filename)
            else:  # zip "symlinks" are written as the small files Python's zipfile makes
                with zipped.open(info) as source:
                    extractor.file(relpath, info.filename, source, (info.external_attr >> 16) & 0o777)


def extract(archive, destination):
    """Unpack a zip, a tar (any compression) or a single .gz file into `destination`.

    Raises UnsafeArchiveError (nothing is written outside `destination`; members before the
    refused one may be in it) or BadArchiveError for a damaged or unknown archive."""
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, destination)
        elif tarfile.is_tarfile(archive):
            _extract_tar(archive, destination)
        elif archive.endswith(".gz"):
            os.makedirs(destination, exist_ok=True)
            target = os.path.join(destination, os.path.basename(archive)[: -len(".gz")])
            with gzip.open(archive, "rb") as source:
                _SafeExtractor(destination).file(os.path.basename(target), target, source)
        else:
            raise BadArchiveError(f"{archive} is not a zip, tar or gzip archive; delete it and "
                                  "retry, or pass the right file with --source")
    except DownloadError:
        raise
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, RuntimeError,
            NotImplementedError, gzip.BadGzipFile, ValueError) as error:
        raise BadArchiveError(f"{archive} is damaged ({type(error).__name__}: {error}); delete "
                              "it and download it again, or pass another --source") from None
