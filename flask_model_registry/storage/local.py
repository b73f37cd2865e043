"""A registry on a local (POSIX) filesystem: the embedded default.

Publishing stages the whole version in ``versions/.staging-<id>/``, fsyncs it and renames it into
place, so readers see a version whole or not at all and a killed writer leaves only a hidden staging
folder (removed by a later save once it is old). Metadata updates are compare-and-swap under an
advisory lock in ``.locks/``, written to a temporary file and renamed over ``metadata.json``.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import fcntl
import functools
import hashlib
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import BinaryIO

from ..errors import (
    ConflictError,
    RootMissingError,
    StorageUnavailableError,
    VersionAliasError,
    VersionExistsError,
)
from ..versioning import sort_key
from .base import (
    AUDIT_DIR,
    METADATA_FILE,
    SIGNATURE_FILE,
    STATE_DIR,
    VERSIONS_DIR,
    Publication,
    Stamp,
    Storage,
    check_state_name,
    read_each,
)
from .files import (
    READ_FLAGS,
    fsync_dir,
    link_parents,
    lock_folder,
    read_whole,
    remove_stale,
    replace_held,
    require_regular,
    stamp,
    swap_file,
    write_durably,
)
from .local_delete import STAGING_PREFIX, LocalDeletes
from .watch import DirectoryWatcher

#: Without change notification, one stat pass over the versions answers the calls that arrive within
#: this many times its own duration (and the refresh interval): polling costs at most ~1/11 of the
#: time, whatever the number of versions, and a change is seen within that bound.
POLL_REUSE = 10.0
#: ``versions/`` changed this recently (ns): its mtime may not tell the next change apart (coarse
#: kernel timestamps), so it is not trusted until it is older.
_RACY_NS = 20_000_000
#: The audit folder that holds event temporaries (beside the pending events: a small folder).
TEMPORARIES = ".pending"


class LocalPublication(Publication):
    """A version staged in a hidden folder next to the versions, renamed into place on commit."""

    def __init__(self, storage: LocalStorage, version: str) -> None:
        self._storage = storage
        self._version = version
        self._staging = os.path.join(storage.versions_dir, f"{STAGING_PREFIX}{uuid.uuid4().hex}")
        os.makedirs(storage.versions_dir, exist_ok=True)
        os.mkdir(self._staging)
        try:
            self._held = lock_folder(self._staging)  # alive: no cleanup removes it, however slow
        except OSError:  # a filesystem without flock: crash cleanup goes by age alone
            self._held = -1

    @contextlib.contextmanager
    def open_artifact(self) -> Iterator[BinaryIO]:
        with open(os.path.join(self._staging, self.artifact_file), "xb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())

    def add_signature(self, data: bytes) -> None:
        write_durably(os.path.join(self._staging, SIGNATURE_FILE), data)

    def commit(self, metadata: bytes) -> None:
        write_durably(os.path.join(self._staging, METADATA_FILE), metadata)
        fsync_dir(self._staging)
        target = self._storage.version_dir(self._version)
        if os.path.lexists(target):  # an empty folder would be silently replaced by rename
            raise self._storage.exists_error(self._version)
        try:
            os.rename(self._staging, target)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                raise self._storage.exists_error(self._version) from None
            raise
        fsync_dir(self._storage.versions_dir)
        self._release()

    def abort(self) -> None:
        shutil.rmtree(self._staging, ignore_errors=True)
        self._release()

    def _release(self) -> None:
        if self._held >= 0:
            os.close(self._held)
            self._held = -1


def _signature_stamp(path: str, dir_fd: int | None = None) -> Stamp | None:
    """The stamp of a version's ``model.sig`` (not followed if a link); None when there is none."""
    try:
        return stamp(os.stat(path, dir_fd=dir_fd, follow_symlinks=False))
    except OSError:
        return None


class LocalStorage(LocalDeletes, Storage):
    """Versions as folders under ``<root>/versions``; never reads or writes outside ``root``."""

    is_local = True

    def __init__(
        self, root: str, *, watch: bool = True, refresh_interval: float = 0.0, max_watches: int | None = None
    ) -> None:
        self.root = os.path.abspath(root)
        self._refresh_interval = refresh_interval
        self._next_poll = 0.0  # without notification: when the last stat pass stops answering
        self._probed: Stamp | None = None  # ... and what versions/ looked like as it began
        self._pass_seconds = 0.0  # how long the last pass took
        self.versions_dir = os.path.join(self.root, VERSIONS_DIR)
        self._real_root = os.path.realpath(self.root)
        self._resolved: tuple[str, str] | None = None  # where the root and versions/ led at the last scan
        self._scan_started = 0.0
        self._watcher = DirectoryWatcher(enabled=watch, budget=max_watches)
        self._plain: set[str] = set()  # version folders the last scan saw as directories, not links
        self._listings: dict[str, tuple[tuple[int, int, int], list[str]]] = {}  # audit folders, sorted

    def describe(self) -> str:
        return f"local registry {os.path.basename(self.root) or self.root!r}"

    @property
    def watching(self) -> bool:
        """Whether change notifications spare the per-call ``stat`` of every version."""
        return self._watcher.active

    @property
    def watcher(self) -> DirectoryWatcher:
        """The change notification (how many folders it watches, how many it could not)."""
        return self._watcher

    def version_dir(self, version: str) -> str:
        return os.path.join(self.versions_dir, version)

    def exists_error(self, version: str) -> VersionExistsError:
        if os.path.exists(os.path.join(self.version_dir(version), METADATA_FILE)):
            return VersionExistsError(f"version {version} already exists; versions are immutable")
        return VersionExistsError(
            f"a folder for version {version} exists without metadata.json (being written, or"
            " broken): finish or remove it by hand"
        )

    def _inside_root(self, path: str) -> bool:
        real = os.path.realpath(path)
        return real == self._real_root or real.startswith(self._real_root + os.sep)

    def unchanged(self) -> bool:
        if self._watcher.active:
            return self._watcher.quiet()
        return self._polled_recently()

    def may_have_changed(self) -> bool:
        if self._watcher.active:
            return self._watcher.changed()
        return not self._polled_recently()

    @property
    def staleness_bound(self) -> float:
        """The most seconds a change made by another process may stay unseen right now: 0 with
        notification; without, the refresh interval or :data:`POLL_REUSE` times the last pass."""
        if self._watcher.active:
            return 0.0
        return max(self._refresh_interval, POLL_REUSE * self._pass_seconds)

    def _polled_recently(self) -> bool:
        """Without notification: whether the last stat pass still answers. It does for
        :data:`POLL_REUSE` times its own duration (or the refresh interval, if longer), as long as
        ``versions/`` itself is unchanged: a version folder added, renamed or removed is seen at once,
        a metadata.json rewritten inside its folder within that bound."""
        probed = self._probed
        return time.monotonic() < self._next_poll and probed is not None and self._probe() == probed

    def _probe(self) -> Stamp | None:
        """``versions/`` as one ``stat`` sees it (None if missing or just changed: not to be trusted)."""
        try:
            st = os.stat(self.versions_dir)
        except OSError:
            return None
        if time.time_ns() - st.st_mtime_ns < _RACY_NS:
            return None
        return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns)

    def rescan_failed(self) -> None:
        self._watcher.forget()  # its signal was consumed by the scan that failed
        self._next_poll = 0.0

    def scan(self) -> dict[str, Stamp]:
        found: dict[str, Stamp] = {}
        with self._listing() as versions_fd:
            names = list(self._folders(versions_fd))
            for name in names:
                try:
                    st = os.stat(f"{name}/{METADATA_FILE}", dir_fd=versions_fd)
                except (FileNotFoundError, NotADirectoryError):
                    continue
                except OSError as exc:
                    # metadata.json is there but cannot be read (a link loop, no permission): a
                    # broken version, listed with an error instead of breaking the whole listing.
                    found[name] = ("unreadable", exc.errno)
                    continue
                found[name] = (stamp(st), _signature_stamp(f"{name}/{SIGNATURE_FILE}", versions_fd))
        self._watch_folders(names, found)
        return found

    def scan_metadata(self) -> dict[str, tuple[bytes, Stamp] | OSError]:
        """One pass: each version's metadata read as its folder is listed, stamped by the read."""
        with self._listing() as versions_fd:
            names = list(self._folders(versions_fd))
            found = read_each(names, functools.partial(self.read_metadata, versions_fd=versions_fd))
        self._watch_folders(names, found)
        return found

    @contextlib.contextmanager
    def _listing(self) -> Iterator[int | None]:
        """``versions/``, open (None if there is none yet) for a listing that sees whatever the
        watcher had queued. The root, ``versions/`` and the folders holding a link on the way to
        them are watched from now on; where such a link was switched (a Kubernetes ``..data``
        volume, git-sync, a blue/green release folder), what it leads to now."""
        started, probe = time.monotonic(), self._probe()
        self._watcher.settle()
        self._scan_started = time.monotonic()
        resolved = (os.path.realpath(self.root), os.path.realpath(self.versions_dir))
        if resolved != self._resolved:
            if self._resolved is not None:
                self._watcher.forget()
            self._resolved = resolved
            self._real_root = resolved[0]
        for path in (self.root, self.versions_dir, *link_parents(self.versions_dir)):
            self._watcher.watch(path)
        self._plain = set()
        try:
            versions_fd = self._open_versions()
        except (FileNotFoundError, NotADirectoryError):
            if not os.path.isdir(self.root):  # a typo in the root must not look like "no versions"
                raise RootMissingError(
                    "the registry root folder does not exist (check MODEL_REGISTRY_ROOT)",
                    location=self.root,
                ) from None
            versions_fd = None
        try:
            yield versions_fd
        finally:
            if versions_fd is not None:
                os.close(versions_fd)
        ended = time.monotonic()
        self._probed, self._pass_seconds = probe, ended - started
        self._next_poll = ended + self.staleness_bound

    def _watch_folders(self, names: list[str], committed: Iterable[str]) -> None:
        """Watch the version folders: every one still being written (its commit must be seen at
        once), then committed ones, the highest first, as far as the watch budget goes."""
        watcher = self._watcher
        if not watcher.active:
            return
        committed = set(committed)
        rest = []
        for name in names:
            if name in committed:
                rest.append(name)
            else:
                watcher.watch(os.path.join(self.versions_dir, name))
        if len(rest) > watcher.budget:
            rest.sort(key=sort_key, reverse=True)  # type: ignore[arg-type,return-value]
        for name in rest:
            watcher.watch(os.path.join(self.versions_dir, name), optional=True)
        watcher.scanned(time.monotonic() - self._scan_started)

    def _folders(self, versions_fd: int | None) -> Iterator[str]:
        """The version folders in ``versions/``: valid names, directories, links only if they stay
        inside the root; each one noted in :attr:`_plain` if not a link."""
        if versions_fd is None:
            return
        with os.scandir(versions_fd) as entries:
            for entry in entries:
                name = entry.name
                try:
                    if sort_key(name) is None or not entry.is_dir():
                        continue
                    linked = entry.is_symlink()
                    if linked and not self._inside_root(os.path.join(self.versions_dir, name)):
                        continue
                except OSError:  # a link loop, no permission: not a usable version folder
                    continue
                if not linked:
                    self._plain.add(name)
                yield name

    def _open_versions(self) -> int:
        """``versions/``, open: paths relative to it are looked up faster than from ``/``."""
        return os.open(self.versions_dir, os.O_RDONLY | os.O_DIRECTORY)

    def _open_inside(self, path: str, versions_fd: int | None = None) -> int:
        """Open ``path`` (relative to ``versions_fd`` if given) for reading, without following a
        link that leads out of the root."""
        try:
            return os.open(path, READ_FLAGS | os.O_NOFOLLOW, dir_fd=versions_fd)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
        if versions_fd is not None:
            path = os.path.join(self.versions_dir, path)
        if not self._inside_root(path):
            raise FileNotFoundError(errno.ENOENT, "link leads out of the registry root")
        return os.open(path, READ_FLAGS)

    def _metadata_path(self, version: str) -> str:
        """``versions/<version>/metadata.json``, refusing a version folder linked out of the root."""
        directory = self.version_dir(version)
        if os.path.islink(directory) and not self._inside_root(directory):  # lstat; realpath if linked
            raise FileNotFoundError(errno.ENOENT, "version folder lies outside the registry root")
        return os.path.join(directory, METADATA_FILE)

    def metadata_mtime(self, version: str) -> float | None:
        try:
            return os.stat(self._metadata_path(version)).st_mtime
        except OSError:
            return None

    def read_metadata(self, version: str, versions_fd: int | None = None) -> tuple[bytes, Stamp]:
        """Every metadata read goes through here. Relative to ``versions_fd`` (an open ``versions/``)
        the path lookup is shorter, and a folder the last scan saw as a plain directory (not a link)
        needs no second check. Its stamp is the file's, and its ``model.sig``'s: adding or replacing
        a signature is a change like a metadata edit."""
        if versions_fd is not None and version in self._plain:
            data, st = read_whole(self._open_inside(f"{version}/{METADATA_FILE}", versions_fd))
            return data, (st, _signature_stamp(f"{version}/{SIGNATURE_FILE}", versions_fd))
        path = self._metadata_path(version)
        data, st = read_whole(self._open_inside(path))
        return data, (st, _signature_stamp(os.path.join(os.path.dirname(path), SIGNATURE_FILE)))

    def read_metadata_many(self, versions: Iterable[str]) -> dict[str, tuple[bytes, Stamp] | OSError]:
        try:
            versions_fd = self._open_versions()
        except (FileNotFoundError, NotADirectoryError):
            return {}
        try:
            return read_each(versions, functools.partial(self.read_metadata, versions_fd=versions_fd))
        finally:
            os.close(versions_fd)

    def _lock_name(self, version: str) -> str:
        """The lock of a version's folder: its own name, or for a folder linked elsewhere in the root,
        a name of the folder it leads to (two links to one folder share one lock). A link to
        another version's folder (an alias) is refused: writes go through the version's own name."""
        directory = self.version_dir(version)
        if not os.path.islink(directory):
            return version
        real = os.path.realpath(directory)
        if os.path.dirname(real) == os.path.realpath(self.versions_dir) and sort_key(os.path.basename(real)):
            raise VersionAliasError(
                f"version {version} is an alias of {os.path.basename(real)}: change it through that name"
            )
        return "link-" + hashlib.sha256(real.encode("utf-8", "surrogateescape")).hexdigest()[:32]

    @contextlib.contextmanager
    def _lock(self, version: str) -> Iterator[None]:
        lock_dir = os.path.join(self.root, ".locks")
        os.makedirs(lock_dir, exist_ok=True)
        if not self._inside_root(lock_dir):
            raise StorageUnavailableError(f"{self.describe()}: .locks links outside the registry root")
        path = os.path.join(lock_dir, f"{self._lock_name(version)}.lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def replace_metadata(self, version: str, data: bytes, expected: Stamp) -> bool:
        with self._lock(version):
            try:
                path = self._metadata_path(version)
                current = self.version_stamp(path)
            except FileNotFoundError:
                raise ConflictError(f"version {version} vanished while being updated") from None
            if current != expected:
                raise ConflictError(f"version {version} changed while being updated")
            replace_held(path, data)  # we hold the version's lock
        with contextlib.suppress(OSError):  # tells registries that do not watch this folder
            os.utime(self.versions_dir)
        return True

    def version_stamp(self, metadata_path: str) -> Stamp:
        """What a version's stamp is on local disk: its metadata.json's and its model.sig's."""
        signature = os.path.join(os.path.dirname(metadata_path), SIGNATURE_FILE)
        return (stamp(os.stat(metadata_path)), _signature_stamp(signature))

    def read_signature(self, version: str) -> bytes:
        directory = os.path.dirname(self._metadata_path(version))
        return read_whole(self._open_inside(os.path.join(directory, SIGNATURE_FILE)))[0]

    def write_signature(self, version: str, data: bytes) -> None:
        with self._lock(version):
            path = self._metadata_path(version)
            if not os.path.exists(path):
                raise FileNotFoundError(errno.ENOENT, f"version {version} is not committed")
            replace_held(os.path.join(os.path.dirname(path), SIGNATURE_FILE), data)
        with contextlib.suppress(OSError):  # tells registries that do not watch this folder
            os.utime(self.versions_dir)

    def begin_publication(self, version: str) -> Publication:
        if os.path.lexists(self.version_dir(version)):
            raise self.exists_error(version)
        remove_stale(self.versions_dir, STAGING_PREFIX)
        return LocalPublication(self, version)

    @contextlib.contextmanager
    def open_artifact(self, version: str, file: str) -> Iterator[BinaryIO]:
        path = os.path.join(self.version_dir(version), file)
        self._real_root = os.path.realpath(self.root)  # the root may be a link, switched since
        if not self._inside_root(path):  # unpickling runs code: only ever from the root
            raise FileNotFoundError(errno.ENOENT, "artefact lies outside the registry root")
        fd = os.open(path, READ_FLAGS)
        try:
            require_regular(fd)
        except BaseException:
            os.close(fd)
            raise
        with os.fdopen(fd, "rb") as f:
            yield f

    def _audit_folder(self, folder: str) -> str:
        """``audit/<folder>``, refused (FileNotFoundError) if it links out of the root."""
        path = os.path.join(self.root, AUDIT_DIR, folder) if folder else os.path.join(self.root, AUDIT_DIR)
        if not self._inside_root(path):
            raise FileNotFoundError(errno.ENOENT, "audit folder lies outside the registry root")
        return path

    def _audit_path(self, name: str) -> str:
        folder, _, file = name.rpartition("/")
        return os.path.join(self._audit_folder(folder), file)

    def audit_create(self, names: Sequence[str], data: bytes) -> None:
        audit = os.path.join(self.root, AUDIT_DIR)
        os.makedirs(os.path.join(audit, TEMPORARIES), exist_ok=True)
        temporaries = self._audit_folder(TEMPORARIES)
        tmp = os.path.join(temporaries, f".{uuid.uuid4().hex}.tmp")
        try:
            write_durably(tmp, data)  # one file, one more name per link: each name all or nothing
            for name in names:
                folder = name.rpartition("/")[0]
                os.makedirs(os.path.join(audit, folder), exist_ok=True)
                path = self._audit_path(name)
                try:
                    os.link(tmp, path)  # fails rather than overwrite
                except FileExistsError:
                    if self.audit_read(name) != data:
                        raise
                fsync_dir(os.path.dirname(path))
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        remove_stale(temporaries, ".", ".tmp")

    def audit_read(self, name: str) -> bytes:
        return read_whole(self._open_inside(self._audit_path(name)))[0]

    def audit_delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._audit_path(name))

    def audit_list(self, folder: str, start_after: str | None = None, limit: int | None = None) -> list[str]:
        try:
            directory = self._audit_folder(folder)
            st = os.stat(directory)
        except (FileNotFoundError, NotADirectoryError):  # none, or linked out of the root
            return []
        # A sorted listing is kept while the folder is unchanged; one changed within the last
        # second may change again within the same timestamp tick, so it is not kept yet.
        key = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
        cached = self._listings.get(directory)
        if cached is not None and cached[0] == key:
            names = cached[1]
        else:
            names = sorted(name for name in os.listdir(directory) if not name.startswith("."))
            if time.time_ns() - st.st_mtime_ns > 1_000_000_000:
                self._listings[directory] = (key, names)
        start = bisect.bisect_right(names, start_after) if start_after is not None else 0
        return names[start : None if limit is None else start + limit]

    def audit_marker(self, folder: str) -> Stamp | None:
        try:
            st = os.stat(self._audit_folder(folder))
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_ctime_ns)

    def _state_path(self, name: str) -> str:
        path = os.path.join(self.root, STATE_DIR, *check_state_name(name).split("/"))
        if not self._inside_root(os.path.dirname(path)):
            raise FileNotFoundError(errno.ENOENT, "state folder lies outside the registry root")
        return path

    def read_state(self, name: str) -> tuple[bytes, Stamp]:
        return read_whole(self._open_inside(self._state_path(name)))

    def write_state(self, name: str, data: bytes, expected: Stamp | None) -> Stamp:
        path = self._state_path(name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        lock_dir = os.path.join(self.root, ".locks")
        os.makedirs(lock_dir, exist_ok=True)
        lock = os.path.join(lock_dir, "state-" + name.replace("/", "-") + ".lock")
        written = swap_file(path, data, expected, lock)
        if written is None:
            raise ConflictError(f"{STATE_DIR}/{name} changed while being updated")
        return written

    def close(self) -> None:
        self._watcher.close()
