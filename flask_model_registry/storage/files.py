"""Filesystem primitives of local storage: durable writes, reads that never block, folder locks,
and the removal of what crashed writers left behind."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import stat
import time

from ..metadata import MAX_METADATA_READ_BYTES
from .base import Stamp

#: A staging folder or audit temporary older than this is taken to be a crashed writer's: removed.
STALE_SECONDS = 3600.0
#: How every file is opened for reading: a FIFO or a device never blocks the open (nor becomes a
#: controlling terminal); what is not a regular file is then refused by :func:`require_regular`.
READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: str, data: bytes) -> None:
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def remove_stale(directory: str, prefix: str, suffix: str = "", max_age: float = STALE_SECONDS) -> None:
    """Remove the temporaries ``<prefix>…<suffix>`` in ``directory`` older than ``max_age`` seconds
    (0: all of them), left by crashed writers; a folder a live writer holds locked (a very slow
    save) stays."""
    cutoff = time.time() - max_age
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.name.startswith(prefix) and entry.name.endswith(suffix):
            with contextlib.suppress(OSError):
                if max_age and entry.stat(follow_symlinks=False).st_mtime >= cutoff:
                    continue
                if not entry.is_dir(follow_symlinks=False):
                    os.unlink(entry.path)
                    continue
                try:
                    fd = lock_folder(entry.path, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # its writer is alive, however slow
                except OSError:  # a filesystem without flock: the age alone decides
                    fd = -1
                try:
                    shutil.rmtree(entry.path)
                finally:
                    if fd >= 0:
                        os.close(fd)


def lock_folder(path: str, how: int = fcntl.LOCK_EX) -> int:
    """Open the folder ``path`` and ``flock`` it; the descriptor (closing it, or dying, unlocks)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, how)
    except BaseException:
        os.close(fd)
        raise
    return fd


def require_regular(fd: int) -> os.stat_result:
    """The ``fstat`` of ``fd``; an OSError if it is not a regular file (a FIFO, a device, a folder)."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise OSError(errno.EINVAL, "not a regular file")
    return st


def read_whole(fd: int, limit: int = MAX_METADATA_READ_BYTES) -> tuple[bytes, Stamp]:
    """The open regular file ``fd`` (then closed), but no more than ``limit`` + 1 bytes, and its stamp."""
    try:
        st = require_regular(fd)
        chunks = [os.read(fd, min(st.st_size, limit) + 1)]  # one read, unless short or grown meanwhile
        size = len(chunks[0])
        while size != st.st_size and size <= limit:
            chunk = os.read(fd, min(1 << 16, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks), stamp(st)
    finally:
        os.close(fd)


def link_parents(path: str) -> list[str]:
    """The (real) folders that hold a symbolic link on the way to ``path``: watching them shows
    when one of those links is switched."""
    parents, current = [], os.sep
    for part in path.strip(os.sep).split(os.sep):
        candidate = os.path.join(current, part)
        if os.path.islink(candidate):
            parents.append(current)
            candidate = os.path.realpath(candidate)
        current = candidate
    return parents


def stamp(st: os.stat_result) -> Stamp:
    return (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)
