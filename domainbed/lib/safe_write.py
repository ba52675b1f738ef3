"""The one write rule (docs/reliability.md, "The write rule"), enforced here (torch-free).

1. Never through a symbolic link: every file a command writes, appends to, creates or
   locks is opened with `O_NOFOLLOW` (`open_fd`, `open_file`, `atomic_write`); a link in
   the place of a file we write is refused, never followed and never replaced.
2. Only inside what the command owns: a temporary is made beside its file, never
   elsewhere, and renamed over it (`atomic_write`).
3. Never over a file we did not write: an output path the user names must not exist
   unless an explicit overwrite flag says so (`check_new_output`).
4. A directory is ours only by what a marker *says* (`read_marker`: our keys, our types),
   never by a file name alone; `claim_directory` / `is_claimed` are the marker of the
   commands that own a whole directory (reproduce, benchmark's work tree).

Every error is a `WriteRuleError`: an `OSError` (so the write-error paths that catch
OSError, e.g. train.py's exit 4, still do) and a `DomainBedError` (one line, exit 2).
"""
import errno
import json
import os
import stat

from domainbed.errors import EXIT_BAD_INPUT, DomainBedError

OWNER_MARKER = ".domainbed-owner.json"   # {"domainbed_owner": <command>, "format": 1}
_MARKER_LIMIT = 1 << 20


class WriteRuleError(DomainBedError, OSError):
    """A write the rule refuses; the message names the path and what to do."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message, path=None, code=errno.EPERM):
        OSError.__init__(self, code, message, path)
        self.message = message

    def __str__(self):
        return self.message


def _link_message(path):
    return (f"{path} is a symbolic link; it is never written through: remove it, or use "
            "another directory")


def refuse_link(path):
    """Raise WriteRuleError when `path` (its last component) is a symbolic link."""
    if os.path.islink(path):
        raise WriteRuleError(_link_message(path), path, errno.ELOOP)


def open_fd(path, flags, mode=0o644):
    """os.open with O_NOFOLLOW (and close-on-exec): a link at `path` is refused."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as e:
        if e.errno == errno.ELOOP or (e.errno == errno.EEXIST and os.path.islink(path)):
            raise WriteRuleError(_link_message(path), path, errno.ELOOP) from None
        raise


def no_follow_opener(path, flags):
    """For open(..., opener=no_follow_opener): the builtin open, never through a link."""
    return open_fd(path, flags)


def open_file(path, mode="w", **kwargs):
    """open(path, mode) for writing or appending, never through a symbolic link."""
    return open(path, mode, opener=no_follow_opener, **kwargs)


def atomic_write(path, write):
    """`write(binary file)` into `path.tmp.<pid>`, synced, then renamed over `path`: the
    file is old or new, never torn; the temporary is removed when anything fails (a full
    disk). A link at `path` is refused (the rename would replace the user's link), and the
    temporary is created exclusively, so a link planted in its place is never followed."""
    refuse_link(path)
    tmp = f"{path}.tmp.{os.getpid()}"
    if os.path.islink(tmp):   # a link planted in our temporary's place: not followed
        try:
            os.remove(tmp)
        except OSError:
            pass
    made = False
    try:
        fd = open_fd(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        made = True
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if made:
            try:
                os.remove(tmp)
            except OSError:
                pass
        raise


def check_new_output(path, flag, overwrite=False, overwrite_flag="--overwrite"):
    """Refuse `path` (a file the user names for our output) when something is there,
    unless `overwrite` (then only a regular file, never a link or a directory)."""
    if not os.path.lexists(path):
        return
    refuse_link(path)
    if overwrite and os.path.isfile(path):
        return
    if os.path.isdir(path):
        raise WriteRuleError(f"{flag} {path} is a directory; name a file", path, errno.EISDIR)
    raise WriteRuleError(f"{flag} {path} already exists; choose another {flag}, or pass "
                         f"{overwrite_flag} to replace it", path, errno.EEXIST)


def read_marker(path, keys):
    """The JSON object at `path` when it has every key of `keys` ({name: type or tuple of
    types}) with a value of that type; None otherwise (missing, a link, not a regular file,
    not JSON, other keys). A marker proves ownership by what it says, never by its name."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > _MARKER_LIMIT:
            return None
        data = os.read(fd, _MARKER_LIMIT + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        value = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict):
        return None
    for key, kind in keys.items():
        if key not in value or isinstance(value[key], bool) and kind is not bool:
            return None
        if not isinstance(value[key], kind):
            return None
    return value


def is_claimed(directory, owner):
    """Whether `directory` holds the marker of `owner` (a command's name)."""
    marker = read_marker(os.path.join(directory, OWNER_MARKER),
                         {"domainbed_owner": str, "format": int})
    return marker is not None and marker["domainbed_owner"] == owner


def claim_directory(directory, owner):
    """Make `directory` (and its parents) and mark it as `owner`'s. Call it only after the
    ownership check said the directory is ours or new; an existing marker is kept."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, OWNER_MARKER)
    if is_claimed(directory, owner):
        return
    refuse_link(path)
    if os.path.lexists(path):
        raise WriteRuleError(f"{path} was not written by {owner}; move it away or use another "
                             "directory", path, errno.EEXIST)
    atomic_write(path, lambda f: f.write(
        (json.dumps({"domainbed_owner": owner, "format": 1}) + "\n").encode()))


def is_inside(path, root):
    """Whether `path`, links resolved, lies inside `root` (links resolved)."""
    root = os.path.realpath(root)
    return os.path.commonpath([os.path.realpath(path), root]) == root
