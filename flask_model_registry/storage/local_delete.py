"""Deleting versions from a local registry: one rename out of ``versions/`` into the registry's own
``.deleted/`` folder (readers see the version whole or not at all), then the files are removed;
and what ``gc`` finds that crashed writers left (see :meth:`.base.Storage.leftovers`)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..errors import ConflictError, StorageUnavailableError
from ..versioning import sort_key
from .base import DELETED_DIR, METADATA_FILE, Leftover, Stamp
from .files import fsync_dir, lock_folder

STAGING_PREFIX = ".staging-"


class LocalDeletes:
    """The delete and leftover methods of :class:`.local.LocalStorage` (a mixin: they use its
    root, its version locks and its checks that a path stays inside the root)."""

    root: str
    versions_dir: str

    if TYPE_CHECKING:  # what LocalStorage provides

        def describe(self) -> str: ...
        def version_dir(self, version: str) -> str: ...
        def _inside_root(self, path: str) -> bool: ...
        def _metadata_path(self, version: str) -> str: ...
        def _lock(self, version: str) -> contextlib.AbstractContextManager[None]: ...
        def version_stamp(self, metadata_path: str) -> Stamp: ...

    def _deleted_dir(self) -> str:
        """``<root>/.deleted``, made if missing; refused if it links out of the root."""
        path = os.path.join(self.root, DELETED_DIR)
        os.makedirs(path, exist_ok=True)
        if not self._inside_root(path):
            raise StorageUnavailableError(f"{self.describe()}: {DELETED_DIR} links outside the registry root")
        return path

    def _move_out(self, version: str) -> None:
        """Rename ``versions/<version>`` into ``.deleted/`` (one step for every reader), durably."""
        deleted = self._deleted_dir()
        os.rename(self.version_dir(version), os.path.join(deleted, f"{version}@{uuid.uuid4().hex[:12]}"))
        fsync_dir(self.versions_dir)
        fsync_dir(deleted)

    def remove_version(self, version: str, expected: Stamp) -> None:
        with self._lock(version):
            current = self.version_stamp(self._metadata_path(version))
            if current != expected:
                raise ConflictError(f"version {version} changed while being deleted")
            self._move_out(version)

    def purge_version(self, version: str) -> int:
        freed = 0
        if self._inside_root(os.path.join(self.root, DELETED_DIR)):
            for name, path in _entries(os.path.join(self.root, DELETED_DIR), links=True):
                if name.rpartition("@")[0] == version:
                    freed += _remove(path)
        return freed

    def footprint(self, versions: Iterable[str]) -> dict[str, tuple[int, float]]:
        found = {}
        for version in versions:
            with contextlib.suppress(OSError):
                modified = os.stat(self._metadata_path(version)).st_mtime
                found[version] = (_tree_size(self.version_dir(version)), modified)
        return found

    def leftovers(self) -> list[Leftover]:
        candidates = []
        for name, path in _entries(self.versions_dir):
            if name.startswith(STAGING_PREFIX):
                candidates.append((name, "staging", path))
            elif sort_key(name) is not None and not os.path.lexists(os.path.join(path, METADATA_FILE)):
                candidates.append((name, "partial", path))
        deleted = os.path.join(self.root, DELETED_DIR)
        if self._inside_root(deleted):
            candidates += [(name, "deleted", path) for name, path in _entries(deleted, links=True)]
        found = []
        for name, kind, path in candidates:
            with contextlib.suppress(OSError):  # gone meanwhile: nothing left to report
                found.append(
                    Leftover(name, kind, _newest(path), _tree_size(path), kind == "staging" and _held(path))
                )
        return found

    def remove_leftover(self, leftover: Leftover) -> int:
        if leftover.kind == "deleted":
            return _remove(os.path.join(self._deleted_dir(), leftover.name))
        path = os.path.join(self.versions_dir, leftover.name)
        if not os.path.isdir(path) or os.path.islink(path):
            return 0
        size = _tree_size(path)
        if leftover.kind == "staging":
            try:
                held = lock_folder(path, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # its writer is alive
            try:
                shutil.rmtree(path)
            finally:
                os.close(held)
            return size
        if leftover.kind == "partial":
            with self._lock(leftover.name):
                if os.path.lexists(os.path.join(path, METADATA_FILE)):
                    return 0  # committed meanwhile (a copy finished by hand)
                self._move_out(leftover.name)
            return self.purge_version(leftover.name)


def _entries(directory: str, links: bool = False) -> list[tuple[str, str]]:
    """The folders right inside ``directory`` (and, with ``links``, the links: a version folder that
    was a link is moved to ``.deleted/`` as one): name and path; none if it is missing."""
    try:
        with os.scandir(directory) as entries:
            return [
                (e.name, e.path)
                for e in entries
                if e.is_dir(follow_symlinks=False) or (links and e.is_symlink())
            ]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _remove(path: str) -> int:
    """Remove the folder ``path`` (a link: only the link); the bytes freed."""
    if os.path.islink(path):
        os.unlink(path)
        return 0
    size = _tree_size(path)
    shutil.rmtree(path)
    return size


def _tree_size(path: str) -> int:
    """The bytes of the files below ``path`` (links not followed; a link itself holds none)."""
    if os.path.islink(path):
        return 0
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


def _newest(path: str) -> float:
    """The newest modification time of ``path`` and anything below it."""
    newest = os.lstat(path).st_mtime
    for folder, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            with contextlib.suppress(OSError):
                newest = max(newest, os.lstat(os.path.join(folder, name)).st_mtime)
    return newest


def _held(path: str) -> bool:
    """Whether a live writer holds the folder's lock (a publish in progress)."""
    try:
        fd = lock_folder(path, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    os.close(fd)
    return False
