"""The storage contract: the only place that knows where a registry's bytes live.

A registry root holds ``versions/<semver>/metadata.json`` (the commit marker) with the artefact beside
it, the audit trail under ``audit/`` (immutable objects, see :mod:`flask_model_registry.audit`) and
nothing else the registry relies on. Backends differ in how they make publishing atomic and how they notice
changes; the registry above sees only this interface.
"""

from __future__ import annotations

import abc
import contextlib
import re
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import BinaryIO

#: Token that changes whenever an object changes (inode and times on disk, ETag on object stores).
Stamp = Hashable
#: What reading one version's metadata gave: its bytes and stamp, or why it could not be read.
Read = tuple[bytes, Stamp] | OSError

METADATA_FILE = "metadata.json"
DEFAULT_ARTIFACT_FILE = "model.pkl"
#: A version's signature (an OpenSSF model-signing bundle) beside its artefact.
SIGNATURE_FILE = "model.sig"
VERSIONS_DIR = "versions"
AUDIT_DIR = "audit"
#: Small mutable documents of the registry's own helpers (webhook cursors), each replaced only by
#: compare-and-swap: ``<root>/state/<name>``.
STATE_DIR = "state"
#: Where a local registry moves a deleted version's folder, in one rename out of ``versions/``,
#: before removing its files: ``<root>/.deleted/<version>@<hex>/`` (what a killed delete leaves).
DELETED_DIR = ".deleted"
_MISSING = object()
_STATE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*(/[a-z0-9][a-z0-9_.-]*)*", re.ASCII)


@dataclass(frozen=True)
class Leftover:
    """Something under ``versions/`` that is no committed version, as :meth:`Storage.leftovers`
    reports it. ``kind``: ``partial`` (a SemVer name without ``metadata.json``), ``staging`` (a
    publish's hidden folder) or ``deleted`` (a local delete's folder, moved out of ``versions/``)."""

    name: str  # the version name, or the hidden folder's name
    kind: str
    modified: float  # the newest modification time in it (seconds since the epoch)
    size: int  # bytes
    locked: bool = False  # a staging folder whose writer is alive


class Publication(abc.ABC):
    """One version being published: write the artefact, then :meth:`commit` the metadata."""

    #: The file name the artefact is stored under, recorded in the metadata.
    artifact_file: str = DEFAULT_ARTIFACT_FILE

    @abc.abstractmethod
    def open_artifact(self) -> AbstractContextManager[BinaryIO]:
        """A binary file to stream the artefact into."""

    @abc.abstractmethod
    def commit(self, metadata: bytes) -> None:
        """Make the version visible, whole, in one step; :class:`VersionExistsError` if taken."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Remove what was written; called when anything before the commit failed."""

    def add_signature(self, data: bytes) -> None:
        """Write ``model.sig`` beside the artefact, made visible by the same :meth:`commit`."""
        raise NotImplementedError(f"{type(self).__name__} cannot store signatures")


class Storage(abc.ABC):
    """Where a registry's bytes live, and how to notice that they changed."""

    #: Whether local file paths are real paths (artefacts can be opened in place).
    is_local: bool = False
    #: Whether :meth:`open_artifact` yields a private copy that no other writer can change (then
    #: it is hashed and unpickled in place; otherwise it is read into memory once, and the bytes
    #: unpickled are exactly the bytes hashed).
    private_artifacts: bool = False

    @abc.abstractmethod
    def describe(self) -> str:
        """A label for logs that carries no credentials (and, for a path, no more than its name)."""

    @abc.abstractmethod
    def may_have_changed(self) -> bool:
        """Cheap check, done before every read: False only when a rescan would find nothing new."""

    def unchanged(self) -> bool:
        """The lock-free probe of every read: True only when nothing can have changed since the
        last scan. It changes no state, so any thread may call it while another one scans; False
        sends the caller on to :meth:`may_have_changed` under the registry's lock."""
        return False

    def rescan_failed(self) -> None:
        """Called when a rescan failed (it saw nothing): the next :meth:`may_have_changed` must not
        say False for what that rescan was to see. A storage that polls on a timer has nothing to do."""
        return None

    @abc.abstractmethod
    def scan(self) -> dict[str, Stamp]:
        """Every committed version (valid name, metadata present) and the stamp of its metadata."""

    def refresh(self, known: Mapping[str, Stamp]) -> tuple[list[str], dict[str, Read]] | None:
        """What changed since the state ``known`` (each version's stamp): None if nothing did, else the
        versions still as known and the metadata of every new or changed one. This default lists
        every version (:meth:`scan`) and reads what changed; object stores ask their manifest first.
        """
        if not known:  # nothing known yet: everything is read, in one pass where the storage can
            fetched = self.scan_metadata()
            return ([], fetched) if fetched else None
        stamps = self.scan()
        kept = [v for v, stamp in stamps.items() if known.get(v, _MISSING) == stamp]
        if len(kept) == len(stamps) == len(known):
            return None
        kept_set = set(kept)
        return kept, self.read_metadata_many([v for v in stamps if v not in kept_set])

    def scan_metadata(self) -> dict[str, tuple[bytes, Stamp] | OSError]:
        """:meth:`scan`, then :meth:`read_metadata_many` of every version: the first listing of a
        registry, which knows nothing yet (a storage may do both in one pass)."""
        return self.read_metadata_many(self.scan())

    @abc.abstractmethod
    def read_metadata(self, version: str) -> tuple[bytes, Stamp]:
        """The raw ``metadata.json`` of a version and its stamp; FileNotFoundError when missing."""

    def read_metadata_many(self, versions: Iterable[str]) -> dict[str, tuple[bytes, Stamp] | OSError]:
        """:meth:`read_metadata` of several versions (object stores fetch them concurrently).

        A version gone since it was listed is left out; one that cannot be read maps to its error.
        """
        return read_each(versions, self.read_metadata)

    @abc.abstractmethod
    def replace_metadata(self, version: str, data: bytes, expected: Stamp) -> bool:
        """Atomically replace ``metadata.json`` if its stamp is still ``expected``, else ConflictError.
        True when this call wrote it; False when it already held exactly ``data`` (our own write,
        retried after its answer was lost, or another writer's identical change)."""

    @abc.abstractmethod
    def begin_publication(self, version: str) -> Publication:
        """Start publishing ``version``; VersionExistsError at once if it is already there."""

    @abc.abstractmethod
    def open_artifact(self, version: str, file: str) -> AbstractContextManager[BinaryIO]:
        """A seekable binary file with the artefact; never follows a link out of the root."""

    @abc.abstractmethod
    def audit_create(self, names: Sequence[str], data: bytes) -> None:
        """Store ``data`` under each of ``names`` (paths below ``audit/``), create-only. A name that
        already holds exactly ``data`` counts as written (a retry); other bytes: FileExistsError."""

    @abc.abstractmethod
    def audit_read(self, name: str) -> bytes:
        """The object ``audit/<name>``; FileNotFoundError when missing (or linked out of the root)."""

    @abc.abstractmethod
    def audit_delete(self, name: str) -> None:
        """Remove ``audit/<name>``; nothing happens when it is already gone."""

    @abc.abstractmethod
    def audit_list(self, folder: str, start_after: str | None = None, limit: int | None = None) -> list[str]:
        """Names right inside ``audit/<folder>`` (``""``: ``audit/`` itself; folders included), in
        ascending order, after ``start_after``, at most ``limit``; hidden temporaries left out."""

    def audit_marker(self, folder: str) -> Stamp | None:
        """A cheap token that changes when a name is added to or removed from ``audit/<folder>``,
        where the storage has one (a local folder's times); None: none, the caller polls."""
        return None

    @abc.abstractmethod
    def remove_version(self, version: str, expected: Stamp) -> None:
        """Take ``version`` out of every listing in one step, if its metadata's stamp is still
        ``expected`` (else :class:`ConflictError`; FileNotFoundError when it is gone already). Its
        other files stay until :meth:`purge_version`."""

    @abc.abstractmethod
    def purge_version(self, version: str) -> int:
        """Remove what a delete of ``version`` left after :meth:`remove_version` (its artefact, its
        folder); the bytes freed (0: nothing was left). A version listed again is left alone."""

    @abc.abstractmethod
    def leftovers(self) -> list[Leftover]:
        """Everything under ``versions/`` (and what deletes left) that is no committed version:
        SemVer-named folders or prefixes without ``metadata.json``, staging folders, half-done
        deletes; with their age and size. Other names are not reported (never touched)."""

    @abc.abstractmethod
    def remove_leftover(self, leftover: Leftover) -> int:
        """Remove one leftover (unless it became a committed version meanwhile); the bytes freed."""

    @abc.abstractmethod
    def footprint(self, versions: Iterable[str]) -> dict[str, tuple[int, float]]:
        """For each of ``versions``: the bytes its folder holds and when its ``metadata.json`` was
        last written (seconds since the epoch); a version gone meanwhile is left out."""

    def reusing_listing(self) -> AbstractContextManager[None]:
        """Within this, one listing answers for all (object storage: a refresh's listing serves
        :meth:`leftovers` too); elsewhere nothing changes."""
        return contextlib.nullcontext()

    def metadata_mtime(self, version: str) -> float | None:
        """When ``version``'s ``metadata.json`` was last written (seconds since the epoch), where
        the storage can tell cheaply; None where it cannot or the file is gone."""
        return None

    def read_signature(self, version: str) -> bytes:
        """A version's ``model.sig`` (no more than the metadata read limit + 1 bytes);
        FileNotFoundError when it has none."""
        raise FileNotFoundError(f"{type(self).__name__} stores no signatures")

    def write_signature(self, version: str, data: bytes) -> None:
        """Add or replace a committed version's ``model.sig`` in one step."""
        raise NotImplementedError(f"{type(self).__name__} cannot store signatures")

    def read_state(self, name: str) -> tuple[bytes, Stamp]:
        """The document ``state/<name>`` and its stamp; FileNotFoundError when there is none."""
        raise NotImplementedError(f"{type(self).__name__} keeps no state documents")

    def write_state(self, name: str, data: bytes, expected: Stamp | None) -> Stamp:
        """Write ``state/<name>`` if its stamp is still ``expected`` (None: only if there is none);
        its new stamp, else :class:`ConflictError` (another writer got there first)."""
        raise NotImplementedError(f"{type(self).__name__} keeps no state documents")

    def close(self) -> None:
        """Free what the storage holds (watches, descriptors); idempotent."""
        return


def check_state_name(name: str) -> str:
    """``name`` if it is a safe state document name (``webhooks/<hex>.json``), else ValueError."""
    if not _STATE_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a state document name")
    return name


def read_each(
    versions: Iterable[str], read: Callable[[str], tuple[bytes, Stamp]]
) -> dict[str, tuple[bytes, Stamp] | OSError]:
    """``read`` each version's metadata, as :meth:`Storage.read_metadata_many` promises."""
    found: dict[str, tuple[bytes, Stamp] | OSError] = {}
    for version in versions:
        try:
            found[version] = read(version)
        except FileNotFoundError:
            continue
        except OSError as exc:  # a link loop, no permission: broken, but listing goes on
            found[version] = exc
    return found
