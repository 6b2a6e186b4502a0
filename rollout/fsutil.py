"""Crash-safe file-system helpers: atomic writes, durable copies, file locks.

A crash (power loss, OOM kill, Ctrl-C) at any point must leave either the old
or the new content on disk, never a mix; readers must never block on writers.
"""

import contextlib
import errno
import fcntl
import os
import re
import secrets
import shutil
import socket
import time

from rollout.errors import RolloutError

DEFAULT_LOCK_TIMEOUT_SECONDS = 120.0

# atomic_write_bytes' temp files: `.<name>.<pid>.<8 hex>.tmp`.
_TEMP_FILE_RE = re.compile(r"\.(?P<name>.+)\.[0-9]+\.[0-9a-f]{8}\.tmp")


def fsync_dir(path):
    """Flush a directory's entries (creates, renames, deletes) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def makedirs_durable(path):
    """Create `path` and missing parents, fsyncing each new directory entry."""
    path = os.path.abspath(path)
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    if parent != path:
        makedirs_durable(parent)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path)
    fsync_dir(parent)


def atomic_write_bytes(path, data):
    """Replace `path` with `data`; readers see the old or new file, never half.

    The temp file lives in the same directory because os.replace is only atomic
    within one file system. The existing file's permission bits are kept (TF
    Serving may run as another user and must still be able to read the file).
    """
    path = os.path.abspath(path)
    directory = os.path.dirname(path)
    tmp = os.path.join(
        directory,
        f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        mode = None
    # 0o666 filtered by the umask, like a normally created file (mkstemp
    # would force 0o600).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if mode is not None:
                os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


def entries(directory):
    """os.scandir entries of `directory`; [] when it does not exist (yet)."""
    try:
        return list(os.scandir(directory))
    except FileNotFoundError:
        return []


def remove_stale_temp_files(directory, names=None):
    """Remove atomic_write_bytes temp files a killed writer left behind.

    A writer killed between writing its temp file and renaming it leaves a
    hidden `.<name>.<pid>.<hex>.tmp` next to `<name>`. Only files for `names`
    (all such files if None) in `directory` are removed. The caller MUST
    hold the lock that serialises writes to those names, or it could delete
    a live writer's temp file. Returns the removed paths, sorted.
    """
    removed = []
    for entry in entries(directory):
        match = _TEMP_FILE_RE.fullmatch(entry.name)
        if not match or (names is not None and match["name"] not in names):
            continue
        if not entry.is_file(follow_symlinks=False):
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry.path)
            removed.append(entry.path)
    if removed:
        fsync_dir(directory)
    return sorted(removed)


# Folders being deleted are first renamed to this prefix (hidden from readers,
# cleaned by the stale-temp sweeps after a crash).
DELETING_PREFIX = ".deleting-"


def remove_dirs(paths):
    """Rename each folder to a hidden name, fsync, then delete: no reader ever
    sees half a folder, and a crash leaves only hidden garbage. Returns the
    paths that existed (and are gone now)."""
    doomed = []
    for path in paths:
        hidden = os.path.join(os.path.dirname(path),
                              f"{DELETING_PREFIX}{os.path.basename(path)}-{os.getpid()}")
        try:
            os.rename(path, hidden)
        except FileNotFoundError:
            continue
        doomed.append((path, hidden))
    for parent in sorted({os.path.dirname(hidden) for _path, hidden in doomed}):
        fsync_dir(parent)
    for _path, hidden in doomed:
        shutil.rmtree(hidden, ignore_errors=True)
    return [path for path, _hidden in doomed]


def atomic_write_text(path, text, encoding="utf-8"):
    """Atomically replace `path` with `text` (see atomic_write_bytes)."""
    atomic_write_bytes(path, text.encode(encoding))


def copy_tree_durable(src, dst):
    """Copy directory `src` to the new path `dst` and fsync everything.

    Symlinks are copied as the files they point to, so the copy stays valid if
    the source (e.g. a pipeline artifact) is later garbage-collected.
    """
    shutil.copytree(src, dst, symlinks=False)
    for root, _dirs, files in os.walk(dst, topdown=False):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(root)
    fsync_dir(os.path.dirname(os.path.abspath(dst)))


def _read_holder(path):
    """Best-effort description of who holds the lock at `path`."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read().strip()
    except OSError:
        return "an unknown process"
    # The holder writes its line right after locking, so an empty file means
    # we raced with that write.
    return text or "an unknown process"


@contextlib.contextmanager
def file_lock(path, timeout=DEFAULT_LOCK_TIMEOUT_SECONDS, poll_interval=0.05):
    """Hold an exclusive `fcntl.flock` on `path` for the `with` block.

    The kernel drops the lock when its holder exits, even on SIGKILL, so a
    leftover lock file never blocks anyone; the file is therefore never
    deleted (deleting it would let two processes lock different inodes).
    The lock is not re-entrant: taking it twice in one process waits for
    itself and times out. Raises RolloutError after `timeout` seconds.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = time.monotonic() + timeout
        delay = min(poll_interval, 0.01)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            if time.monotonic() >= deadline:
                raise RolloutError(
                    f"timed out after {timeout:g}s waiting for the lock "
                    f"{path}, held by {_read_holder(path)}: wait for that "
                    f"command to finish and retry (the lock is released "
                    f"automatically when its holder exits)")
            # Polling with LOCK_NB instead of a blocking flock + SIGALRM keeps
            # this usable from threads and from code that owns its signals.
            time.sleep(delay)
            delay = min(delay * 2, poll_interval)
        holder = f"pid {os.getpid()} on {socket.gethostname()}\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder.encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def write_text_if_changed(path, text):
    """atomic_write_text unless `path` already holds `text`; True if it wrote.

    Skipping identical rewrites keeps pollers (TF Serving, kubectl diff) quiet.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            if handle.read() == text:
                return False
    except FileNotFoundError:
        pass
    makedirs_durable(os.path.dirname(path))
    atomic_write_text(path, text)
    return True
