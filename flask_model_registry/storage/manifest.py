"""Discovery on object storage: a manifest that is both the change marker and a cache of the state.

``<root>/manifest.json`` holds every version's ``metadata.json`` as last written by a registry, with
the object's stamp (ETag; generation on GCS) and a sequence number. Every registry write (publish,
promotion, metadata edit) updates it after its commit, with the store's compare-and-swap (retried),
so concurrent writers on many hosts never lose an entry. Then:

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
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ..versioning import sort_key
from .base import Read, Stamp

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
_CAS_ATTEMPTS = 50


class Objects(Protocol):
    """The single-object requests the manifest needs (:class:`.objects.Objects` and its subclasses)."""

    def read(self, path: str, limit: int | None = ...) -> tuple[bytes, Stamp]: ...

    def read_if_changed(self, path: str, stamp: Stamp) -> tuple[bytes, Stamp] | None: ...

    def create(self, path: str, data: bytes) -> Stamp: ...

    def replace(self, path: str, data: bytes, expected: Stamp) -> Stamp | None: ...


@dataclass(frozen=True)
class Entry:
    """One version as its last write left it: the metadata object's stamp and bytes."""

    stamp: Stamp
    seq: int
    metadata: bytes | None  # None: too large, or not UTF-8; readers fetch the object itself


@dataclass(frozen=True)
class Manifest:
    """The registry's state as written. ``seq`` counts the writes; ``history`` holds the stamps of
    the manifest objects this one replaced, newest first, each with its ``seq``: a reader that last
    saw one of them applies the entries written since, any other reader lists in full."""

    seq: int
    entries: Mapping[str, Entry]
    history: tuple[tuple[Stamp, int], ...] = ()

    def with_changes(self, changes: Mapping[str, tuple[bytes, Stamp]], replacing: Stamp | None) -> Manifest:
        """The manifest that replaces this one (whose object's stamp is ``replacing``; None: there
        is none, or it was unusable): each changed version's entry new, with the next ``seq``."""
        seq = self.seq + 1
        entries = dict(self.entries)
        for version, (data, stamp) in changes.items():
            entries[version] = Entry(stamp, seq, data if len(data) <= MAX_ENTRY and _is_text(data) else None)
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
                version: Entry(_stamp(item["stamp"]), _int(item["seq"]), _metadata(item["metadata"]))
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
        list_stamps: Callable[[], dict[str, Stamp]],
        fetch: Callable[[Iterable[str]], dict[str, Read]],
        full_refresh: float,
    ) -> None:
        self._objects = objects
        self.path = path
        self._list_stamps = list_stamps
        self._fetch = fetch
        self.full_refresh = full_refresh
        self._stamp: Stamp | None = None  # of the manifest object last read
        # Versions the last full listing showed newer than the manifest read before it: an entry
        # recorded since may hold an older state (a racing writer's), so their next change is
        # read from the object itself.
        self._ahead: set[str] = set()
        self._next_full = 0.0  # monotonic time of the next full listing; 0: the next refresh

    def force_full(self) -> None:
        """Make the next refresh a full listing (e.g. after a write whose manifest update failed)."""
        self._next_full = 0.0

    # reading ------------------------------------------------------------------------------------

    def _read(self, stamp: Stamp | None) -> tuple[Manifest | None, Stamp | None] | None:
        """The manifest and its object's stamp ((None, None) if there is none), or None when its
        stamp is still ``stamp``."""
        try:
            if stamp is None:
                data, new_stamp = self._objects.read(self.path, None)
            else:
                got = self._objects.read_if_changed(self.path, stamp)
                if got is None:
                    return None
                data, new_stamp = got
        except FileNotFoundError:
            return None, None
        return Manifest.decode(data), new_stamp

    def refresh(self, known: Mapping[str, Stamp]) -> tuple[list[str], dict[str, Read]] | None:
        """What changed since ``known``, as :meth:`Storage.refresh` promises."""
        if time.monotonic() < self._next_full:
            got = self._read(self._stamp)
            if got is None or (got == (None, None) and self._stamp is None):
                return None  # the idle refresh: one conditional request, answered "not modified"
            manifest, stamp = got
            since = manifest.seq_of(self._stamp) if manifest is not None and self._stamp is not None else None
            if manifest is not None and since is not None:
                changed = {v: e for v, e in manifest.entries.items() if e.seq > since}
                self._stamp = stamp
                if not changed:
                    return None
                kept = [v for v in known if v not in changed]
                own = [v for v, e in changed.items() if e.metadata is None or v in self._ahead]
                self._ahead.difference_update(changed)
                fetched: dict[str, Read] = {
                    v: (e.metadata, e.stamp) for v, e in changed.items() if e.metadata is not None
                }
                fetched.update(self._fetch(own))
                return kept, fetched
            return self._full(known, manifest, stamp)  # not a successor of the last one: confirm all
        return self._full(known, *self._read(None))  # type: ignore[misc]

    def _full(
        self, known: Mapping[str, Stamp], manifest: Manifest | None, stamp: Stamp | None
    ) -> tuple[list[str], dict[str, Read]] | None:
        """A full listing, confirming what is known and what the manifest (read before it) says."""
        started = time.monotonic()
        listed = self._list_stamps()
        entries = manifest.entries if manifest is not None else {}
        kept: list[str] = []
        fetched: dict[str, Read] = {}
        missing: list[str] = []
        for version, listed_stamp in listed.items():
            entry = entries.get(version)
            if known.get(version, _NOTHING) == listed_stamp:
                kept.append(version)
            elif entry is not None and entry.stamp == listed_stamp and entry.metadata is not None:
                fetched[version] = (entry.metadata, entry.stamp)
            else:
                missing.append(version)
        fetched.update(self._fetch(missing))
        self._stamp, self._next_full = stamp, started + self.full_refresh
        self._ahead = {v for v, listed_stamp in listed.items() if _stamp_of(entries.get(v)) != listed_stamp}
        stale = len(missing) > REPAIR_THRESHOLD or len(entries) > len(listed) + REPAIR_THRESHOLD
        if (manifest is None and listed) or stale:
            self._repair(manifest, stamp, kept, fetched)
        if not fetched and len(kept) == len(known):
            return None
        return kept, fetched

    def _repair(
        self,
        manifest: Manifest | None,
        stamp: Stamp | None,
        kept: list[str],
        fetched: Mapping[str, Read],
    ) -> None:
        """Write a whole manifest from what a full listing confirmed, unless someone else wrote one
        since it was read (compare-and-swap, one attempt: best effort, never an error)."""
        base = manifest if manifest is not None else Manifest(0, {})
        carried = {}
        for version in kept:  # known from before: their bytes are in the old manifest, or not at hand
            entry = base.entries.get(version)
            if entry is None or entry.metadata is None:
                return  # the next cold start (which knows nothing) repairs it
            carried[version] = (entry.metadata, entry.stamp)
        state = {v: got for v, got in fetched.items() if not isinstance(got, OSError)}
        replacing = stamp if manifest is not None else None
        repaired = Manifest(base.seq, {}, base.history).with_changes({**carried, **state}, replacing)
        try:
            if stamp is None:
                written = self._objects.create(self.path, repaired.encode())
            else:
                written = self._objects.replace(self.path, repaired.encode(), stamp)
        except Exception as exc:  # read-only credentials, a race: the manifest stays as it was
            log.debug("could not rewrite the registry manifest: %s", exc)
            return
        if written is not None:
            self._stamp = written

    # writing ------------------------------------------------------------------------------------

    def record(self, version: str, metadata_path: str) -> None:
        """Bring ``version``'s entry up to date after a write to its metadata (at ``metadata_path``):
        compare-and-swap, retried. The metadata object is read after the manifest, so an entry is
        never replaced by an older state of that object when writers race. A failure is logged, never
        raised (the write itself happened): this registry then lists in full at its next refresh,
        and others find the change at their next full listing."""
        try:
            for attempt in range(_CAS_ATTEMPTS):
                current, current_stamp = self._read(None)  # type: ignore[misc]
                try:
                    data, stamp = self._objects.read(metadata_path)
                except FileNotFoundError:
                    return
                entry = current.entries.get(version) if current is not None else None
                if entry is not None and entry.stamp == stamp:
                    return  # a racing writer recorded this state (or a newer one is on its way)
                base = current if current is not None else Manifest(0, {})
                replacing = current_stamp if current is not None else None
                updated = base.with_changes({version: (data, stamp)}, replacing).encode()
                if current_stamp is None:
                    try:
                        self._objects.create(self.path, updated)
                        return
                    except FileExistsError:
                        pass
                elif self._objects.replace(self.path, updated, current_stamp) is not None:
                    return
                time.sleep(random.uniform(0, 0.005 * (attempt + 1)))
            raise TimeoutError(f"the manifest kept changing ({_CAS_ATTEMPTS} attempts)")
        except Exception as exc:
            log.warning(
                "registry manifest not updated after writing %s (%s); others see it at their next"
                " full listing",
                version,
                exc,
            )
            self.force_full()


_NOTHING = object()


def _stamp_of(entry: Entry | None) -> Stamp | None:
    return entry.stamp if entry is not None else None
