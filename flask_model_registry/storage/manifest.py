"""Discovery on object storage: a manifest that is both the change marker and a cache of the state.

``<root>/manifest.json`` holds every version's ``metadata.json`` as last written by a registry, with
the object's stamp (ETag; generation on GCS) and a sequence number. Every registry write (publish,
promotion, metadata edit; a delete leaves a tombstone entry, which readers apply by dropping the
version) updates it after its commit, with the store's compare-and-swap (retried), so concurrent
writers on many hosts never lose an entry. Then:

- a refresh in which nothing changed is one small conditional request for the manifest (a ``GET``
  with ``If-None-Match`` answered ``304``; on GCS the object's metadata, whose generation tells);
- after a write elsewhere, that request brings the manifest, and the entries newer than the last
  one applied are the changes, metadata included: no listing, no other ``GET``;
- a cold start reads the manifest and confirms it against one listing: an entry whose stamp the
  listing shows is used as is, any other version is fetched (one ``GET`` each);
- a full listing still runs every ``full_refresh`` seconds, for copies made by hand.

The manifest is only a cache. Its first line carries the format and the sha256 of the rest; one that
is missing, corrupt, hand-edited or of another format is ignored (one slower refresh: a listing and
a ``GET`` per version it does not cover), and the next registry that lists the store in full writes
a whole one again (best effort: a reader without write access simply does not). Each manifest names
the objects it replaced (their stamps, with the ``seq`` of each): a reader applies only the entries
written after the manifest it last saw, and lists in full when that one is not among them (a
manifest restored from a backup, rewritten after damage, or more than :data:`HISTORY` writes ago).

The checksum is unkeyed: it finds damage, not a hand edit whose author recomputed it. So a copy of a
``metadata.json`` is checked against the object itself wherever the store states its MD5: a listing
uses a copy only if its bytes have the MD5 the listing states for the object (S3's single-part ETag,
Azure's ``Content-MD5``, GCS's ``md5Hash``), and on S3 a refresh between listings uses a copy only if
its bytes have the MD5 its recorded ETag states. A copy that fails is read from its object instead,
and the next full listing rechecks every copy applied since. The manifest is read no further than
:func:`read_limit` allows: a larger one is not used (one slower refresh), so a huge object there
costs a bounded read, not the memory to hold and parse it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from ..versioning import sort_key
from .base import Read, Stamp
from .objects import md5

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
#: The manifest layout this package reads and writes; any other is ignored and rewritten.
FORMAT = 1
#: Seconds between full listings on object storage, unless configured.
DEFAULT_FULL_REFRESH = 60.0
#: Metadata larger than this stays out of the manifest (readers fetch it from its own object).
MAX_ENTRY = 256 << 10
#: A full listing that had to fetch more than this many objects the manifest lacked rewrites it.
REPAIR_THRESHOLD = 4
#: How many predecessors a manifest names: a reader that missed more writes than this lists in full.
HISTORY = 64
#: The most bytes of a manifest read before a listing has said how large an honest one can be.
MIN_READ_LIMIT = 8 << 20
#: Bytes an honest manifest takes besides its inline metadata: its head and history, then per version
#: its name, stamp, seq and keys; each byte of inline metadata takes at most 6 once JSON-escaped.
_BASE_SIZE = 64 << 10
_VERSION_SIZE = 1 << 10
_ESCAPED = 6
_CAS_ATTEMPTS = 50


class Listed(NamedTuple):
    """A version's ``metadata.json`` as a listing shows it."""

    stamp: Stamp
    size: int
    md5: bytes | None  # the MD5 of its bytes, where the store states it


def honest_size(listed: Iterable[Listed]) -> int:
    """The most bytes a manifest written by this package can take for the listed versions."""
    inline = (_ESCAPED * item.size if item.size <= MAX_ENTRY else 0 for item in listed)
    return _BASE_SIZE + sum(_VERSION_SIZE + size for size in inline)


def read_limit(listed: Iterable[Listed]) -> int:
    """How much of the manifest is read: twice the most an honest one takes for the versions the
    last listing showed (room for those published since), and never less than :data:`MIN_READ_LIMIT`."""
    return max(MIN_READ_LIMIT, 2 * honest_size(listed))


class Objects(Protocol):
    """The single-object requests the manifest needs (:class:`.objects.Objects` and its subclasses)."""

    def read(self, path: str, limit: int | None = ...) -> tuple[bytes, Stamp]: ...

    def read_if_changed(
        self, path: str, stamp: Stamp, limit: int | None = ...
    ) -> tuple[bytes, Stamp] | None: ...

    def stamp_md5(self, stamp: Stamp) -> bytes | None: ...

    def create(self, path: str, data: bytes) -> Stamp: ...

    def replace(self, path: str, data: bytes, expected: Stamp) -> Stamp | None: ...


@dataclass(frozen=True)
class Entry:
    """One version as its last write left it: the metadata object's stamp and bytes."""

    stamp: Stamp
    seq: int
    metadata: bytes | None  # None: too large, or not UTF-8; readers fetch the object itself
    deleted: bool = False  # a tombstone: the version was deleted (readers drop it)


@dataclass(frozen=True)
class Got:
    """A read of the manifest object: what it holds (None: missing, unusable or too large) and its
    stamp (None: there is none)."""

    manifest: Manifest | None
    stamp: Stamp | None
    too_large: bool = False


@dataclass(frozen=True)
class Manifest:
    """The registry's state as written. ``seq`` counts the writes; ``history`` holds the stamps of
    the manifest objects this one replaced, newest first, each with its ``seq``: a reader that last
    saw one of them applies the entries written since, any other reader lists in full."""

    seq: int
    entries: Mapping[str, Entry]
    history: tuple[tuple[Stamp, int], ...] = ()

    def with_changes(
        self,
        changes: Mapping[str, tuple[bytes, Stamp]],
        replacing: Stamp | None,
        removed: Iterable[str] = (),
    ) -> Manifest:
        """The manifest that replaces this one (whose object's stamp is ``replacing``; None: there
        is none, or it was unusable): each changed version's entry new, and a tombstone for each
        ``removed`` one, with the next ``seq``."""
        seq = self.seq + 1
        entries = dict(self.entries)
        for version, (data, stamp) in changes.items():
            entries[version] = Entry(stamp, seq, data if len(data) <= MAX_ENTRY and _is_text(data) else None)
        for version in removed:
            entries[version] = Entry("", seq, None, deleted=True)
        history = ((replacing, self.seq), *self.history)[:HISTORY] if replacing is not None else ()
        return Manifest(seq, entries, history)

    def seq_of(self, stamp: Stamp) -> int | None:
        """The ``seq`` of the predecessor whose object had ``stamp``, if it is in the history."""
        for old, seq in self.history:
            if old == stamp:
                return seq
        return None

    def encode(self) -> bytes:
        body = json.dumps(
            {
                "seq": self.seq,
                "history": [[_jsonable(stamp), seq] for stamp, seq in self.history],
                "versions": {
                    v: {
                        "stamp": _jsonable(e.stamp),
                        "seq": e.seq,
                        "metadata": e.metadata.decode() if e.metadata is not None else None,
                        **({"deleted": True} if e.deleted else {}),
                    }
                    for v, e in self.entries.items()
                },
            },
            separators=(",", ":"),
        ).encode()
        digest = hashlib.sha256(body).hexdigest()
        head = {"format": FORMAT, "writer": "flask-model-registry", "sha256": digest}
        return json.dumps(head).encode() + b"\n" + body

    @classmethod
    def decode(cls, data: bytes) -> Manifest | None:
        """The manifest in ``data``, or None if it cannot be trusted (logged, never raised)."""
        try:
            head_line, _, body = data.partition(b"\n")
            head = json.loads(head_line)
            if not isinstance(head, dict) or head.get("format") != FORMAT:
                raise ValueError(f"format {head.get('format') if isinstance(head, dict) else None!r}")
            if head.get("sha256") != hashlib.sha256(body).hexdigest():
                raise ValueError("checksum mismatch (edited by hand, or damaged)")
            value = json.loads(body)
            entries = {
                version: Entry(
                    _stamp(item["stamp"]),
                    _int(item["seq"]),
                    _metadata(item["metadata"]),
                    item.get("deleted") is True,
                )
                for version, item in value["versions"].items()
                if sort_key(version) is not None
            }
            history = tuple((_stamp(stamp), _int(seq)) for stamp, seq in value["history"])
            manifest = cls(_int(value["seq"]), entries, history)
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            log.info("ignoring the registry manifest: %s", exc)
            return None
        return manifest


def _is_text(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def _jsonable(stamp: Stamp) -> Any:
    return list(stamp) if isinstance(stamp, tuple) else stamp


_SCALARS = (str, int, float, type(None))


def _stamp(value: Any) -> Stamp:
    """A stamp as the stores give them: a string (ETag, generation) or a tuple of scalars."""
    if isinstance(value, list) and all(isinstance(item, _SCALARS) for item in value):
        return tuple(value)
    if isinstance(value, str):
        return value
    raise TypeError(f"not a stamp: {value!r}")


def _metadata(value: Any) -> bytes | None:
    if value is not None and not isinstance(value, str):
        raise TypeError("metadata is not a string")
    return value.encode("utf-8", "surrogatepass") if value is not None else None


def _int(value: Any) -> int:
    if type(value) is not int:
        raise TypeError(f"not an integer: {value!r}")
    return value


class ManifestDiscovery:
    """The refresh of a registry on object storage (see the module's docstring)."""

    def __init__(
        self,
        objects: Objects,
        path: str,
        *,
        list_metadata: Callable[[], dict[str, Listed]],
        fetch: Callable[[Iterable[str]], dict[str, Read]],
        full_refresh: float,
    ) -> None:
        self._objects = objects
        self.path = path
        self._list_metadata = list_metadata
        self._fetch = fetch
        self.full_refresh = full_refresh
        self._stamp: Stamp | None = None  # of the manifest object last read
        # Versions the last full listing showed newer than the manifest read before it: an entry
        # recorded since may hold an older state (a racing writer's), so their next change is
        # read from the object itself.
        self._ahead: set[str] = set()
        # Versions whose state here is a copy applied between full listings, which no stated MD5
        # confirmed: the MD5 of that copy, checked against the next full listing's.
        self._unconfirmed: dict[str, bytes] = {}
        self._limit = MIN_READ_LIMIT  # the most bytes of the manifest read; the listings raise it
        self._next_full = 0.0  # monotonic time of the next full listing; 0: the next refresh

    def force_full(self) -> None:
        """Make the next refresh a full listing (e.g. after a write whose manifest update failed)."""
        self._next_full = 0.0

    # reading ------------------------------------------------------------------------------------

    def _read(self, stamp: Stamp | None) -> Got | None:
        """The manifest, or None when its object's stamp is still ``stamp``. No more than the
        limit + 1 bytes are read: a larger manifest is not used."""
        try:
            if stamp is None:
                data, new_stamp = self._objects.read(self.path, self._limit + 1)
            else:
                got = self._objects.read_if_changed(self.path, stamp, self._limit + 1)
                if got is None:
                    return None
                data, new_stamp = got
        except FileNotFoundError:
            return Got(None, None)
        if len(data) > self._limit:
            log.info("ignoring the registry manifest: larger than %d bytes", self._limit)
            return Got(None, new_stamp, too_large=True)
        return Got(Manifest.decode(data), new_stamp)

    def _allow(self, listed: Mapping[str, Listed]) -> bool:
        """Set the read limit from a listing; whether it grew."""
        old, self._limit = self._limit, read_limit(listed.values())
        return self._limit > old

    def refresh(self, known: Mapping[str, Stamp]) -> tuple[list[str], dict[str, Read]] | None:
        """What changed since ``known``, as :meth:`Storage.refresh` promises."""
        if time.monotonic() < self._next_full:
            got = self._read(self._stamp)
            if got is None or (got.stamp is None and self._stamp is None):
                return None  # the idle refresh: one conditional request, answered "not modified"
            manifest = got.manifest
            since = manifest.seq_of(self._stamp) if manifest is not None and self._stamp is not None else None
            if manifest is not None and since is not None:
                self._stamp = got.stamp
                return self._apply({v: e for v, e in manifest.entries.items() if e.seq > since}, known)
            return self._full(known, got)  # not a successor of the last one: confirm all
        return self._full(known, self._read(None))  # type: ignore[arg-type]

    def _apply(
        self, changed: Mapping[str, Entry], known: Mapping[str, Stamp]
    ) -> tuple[list[str], dict[str, Read]] | None:
        """The entries written since the manifest last read: their copies, except those that must
        come from their object (too large, ahead, or not the bytes their S3 ETag states)."""
        if not changed:
            return None
        kept = [v for v in known if v not in changed]
        fetched: dict[str, Read] = {}
        own: list[str] = []
        for version, entry in changed.items():
            self._unconfirmed.pop(version, None)
            if entry.deleted:
                continue  # deleted: neither kept nor fetched
            if entry.metadata is None or version in self._ahead:
                own.append(version)
                continue
            digest = md5(entry.metadata)
            stated = self._objects.stamp_md5(entry.stamp)
            if stated is not None and stated != digest:
                log.warning(
                    "the registry manifest's copy of %s is not what its ETag states; read it", version
                )
                own.append(version)
                continue
            fetched[version] = (entry.metadata, entry.stamp)
            if stated is None:
                self._unconfirmed[version] = digest
        self._ahead.difference_update(changed)
        fetched.update(self._fetch(own))
        return kept, fetched

    def _full(self, known: Mapping[str, Stamp], got: Got) -> tuple[list[str], dict[str, Read]] | None:
        """A full listing, confirming what is known and what the manifest (read before it) says."""
        started = time.monotonic()
        listed = self._list_metadata()
        stamp = got.stamp  # what the next refresh asks about: the manifest read before the listing
        if self._allow(listed) and got.too_large:
            # Larger than was read, but no larger than this listing allows. Its copies are used
            # only where the listing confirms them, so reading it after the listing is safe.
            got = self._read(None)  # type: ignore[assignment]
        if got.too_large:
            log.warning("ignoring the registry manifest: larger than %d bytes", self._limit)
        entries = got.manifest.entries if got.manifest is not None else {}
        kept: list[str] = []
        fetched: dict[str, Read] = {}
        missing: list[str] = []
        disagreeing = 0
        for version, item in listed.items():
            entry = entries.get(version)
            copy = self._unconfirmed.get(version)
            if known.get(version, _NOTHING) == item.stamp and (item.md5 is None or copy in (None, item.md5)):
                kept.append(version)
            elif entry is not None and entry.stamp == item.stamp and entry.metadata is not None:
                if _confirmed(entry.metadata, item.md5):
                    fetched[version] = (entry.metadata, entry.stamp)
                    continue
                disagreeing += 1
                missing.append(version)
            else:
                missing.append(version)
        if disagreeing:
            log.warning(
                "%d copies in the registry manifest differ from their objects; read those", disagreeing
            )
        fetched.update(self._fetch(missing))
        self._stamp, self._next_full = stamp, started + self.full_refresh
        self._ahead = {v for v, item in listed.items() if _stamp_of(entries.get(v)) != item.stamp}
        self._unconfirmed = {}  # what a listing can confirm, it just did
        stale = len(missing) > REPAIR_THRESHOLD or len(entries) > len(listed) + REPAIR_THRESHOLD
        if (got.manifest is None and listed) or stale or disagreeing:
            self._repair(got, listed, kept, fetched)
        if not fetched and len(kept) == len(known):
            return None
        return kept, fetched

    def _repair(
        self, got: Got, listed: Mapping[str, Listed], kept: list[str], fetched: Mapping[str, Read]
    ) -> None:
        """Write a whole manifest from what a full listing confirmed, unless someone else wrote one
        since it was read (compare-and-swap, one attempt: best effort, never an error)."""
        base = got.manifest if got.manifest is not None else Manifest(0, {})
        carried = {}
        for version in kept:  # known from before: their bytes are in the old manifest, or not at hand
            entry = base.entries.get(version)
            item = listed[version]
            if entry is None or entry.metadata is None or entry.stamp != item.stamp:
                return  # the next cold start (which knows nothing) repairs it
            if not _confirmed(entry.metadata, item.md5):
                return
            carried[version] = (entry.metadata, entry.stamp)
        state = {v: read for v, read in fetched.items() if not isinstance(read, OSError)}
        replacing = got.stamp if got.manifest is not None else None
        repaired = Manifest(base.seq, {}, base.history).with_changes({**carried, **state}, replacing)
        try:
            if got.stamp is None:
                written = self._objects.create(self.path, repaired.encode())
            else:
                written = self._objects.replace(self.path, repaired.encode(), got.stamp)
        except Exception as exc:  # read-only credentials, a race: the manifest stays as it was
            log.debug("could not rewrite the registry manifest: %s", exc)
            return
        if written is not None:
            self._stamp = written

    # writing ------------------------------------------------------------------------------------

    def _read_whole(self) -> Got:
        """The manifest as it is now, to update it. One larger than this registry has yet allowed
        costs a listing, which tells how large an honest one may be."""
        got = self._read(None)
        if got is not None and got.too_large and self._allow(self._list_metadata()):
            got = self._read(None)
        return got  # type: ignore[return-value]

    def record_removal(self, version: str) -> None:
        """Put a tombstone for ``version`` in the manifest after its ``metadata.json`` was removed,
        so other registries drop it at their next refresh (see :meth:`_update`)."""

        def change(got: Got) -> Manifest | None:
            entry = got.manifest.entries.get(version) if got.manifest is not None else None
            if entry is not None and entry.deleted:
                return None
            base, replacing = _successor_of(got)
            return base.with_changes({}, replacing, removed=[version])

        self._update(change, f"deleting {version}")

    def record(self, version: str, metadata_path: str) -> None:
        """Bring ``version``'s entry up to date after a write to its metadata (at ``metadata_path``).
        The metadata object is read after the manifest, so an entry is never replaced by an older
        state of that object when writers race (see :meth:`_update`)."""

        def change(got: Got) -> Manifest | None:
            try:
                data, stamp = self._objects.read(metadata_path)
            except FileNotFoundError:
                return None
            entry = got.manifest.entries.get(version) if got.manifest is not None else None
            if entry is not None and entry.stamp == stamp:
                return None  # a racing writer recorded this state (or a newer one is on its way)
            base, replacing = _successor_of(got)
            return base.with_changes({version: (data, stamp)}, replacing)

        self._update(change, f"writing {version}")

    def _update(self, change: Callable[[Got], Manifest | None], doing: str) -> None:
        """Replace the manifest with ``change`` of it (None: nothing to write) by compare-and-swap,
        retried. A failure is logged, never raised (the write itself happened): this registry then
        lists in full at its next refresh, and others find the change at their next full listing."""
        try:
            for attempt in range(_CAS_ATTEMPTS):
                got = self._read_whole()
                updated = change(got)
                if updated is None:
                    return
                if got.stamp is None:
                    try:
                        self._objects.create(self.path, updated.encode())
                        return
                    except FileExistsError:
                        pass
                elif self._objects.replace(self.path, updated.encode(), got.stamp) is not None:
                    return
                time.sleep(random.uniform(0, 0.005 * (attempt + 1)))
            raise TimeoutError(f"the manifest kept changing ({_CAS_ATTEMPTS} attempts)")
        except Exception as exc:
            log.warning(
                "registry manifest not updated after %s (%s); others see it at their next full listing",
                doing,
                exc,
            )
            self.force_full()


def _successor_of(got: Got) -> tuple[Manifest, Stamp | None]:
    """What a write builds on: the manifest read and its object's stamp, or an empty one (and no
    predecessor) when there was none or it was unusable."""
    return (got.manifest, got.stamp) if got.manifest is not None else (Manifest(0, {}), None)


def _confirmed(data: bytes, stated: bytes | None) -> bool:
    """Whether a copy is the object's bytes, as far as the store states their MD5 (None: it does not)."""
    return stated is None or md5(data) == stated


_NOTHING = object()


def _stamp_of(entry: Entry | None) -> Stamp | None:
    return entry.stamp if entry is not None else None
