"""What a registry knows at one moment: each committed version as last read, in ascending order.

Reads go through an immutable :class:`Snapshot`; whatever lies in a version's ``metadata.json``,
building its :class:`Entry` never fails: a file that cannot be used makes an entry with an ``error``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple

from .errors import CorruptVersionError
from .metadata import parse_metadata
from .storage import Stamp
from .versioning import SortKey, is_prerelease, sort_key


class Entry(NamedTuple):
    """One committed version as last read: its metadata, or why that could not be read.

    A tuple, not a dataclass: thousands are built per cold listing, and tuples build fastest.
    """

    version: str
    key: SortKey
    stamp: Stamp
    metadata: dict[str, Any] | None
    error: str | None = None

    @property
    def stage(self) -> str | None:
        """The stage as queries match it: a user-written ``stage`` that is not a string (a list,
        an object, a number) is a value like any other, and matches no stage query."""
        stage = self.metadata.get("stage") if self.metadata is not None else None
        return stage if type(stage) is str else None

    def require_metadata(self) -> dict[str, Any]:
        """The metadata, or :class:`CorruptVersionError` saying why it could not be read."""
        if self.metadata is None:
            raise CorruptVersionError(f"version {self.version} is corrupt: {self.error}")
        return self.metadata


def entry_from(version: str, read: tuple[bytes, Stamp] | OSError) -> Entry:
    """The entry of a version from what its storage read: the bytes and stamp, or the error."""
    key = sort_key(version)
    assert key is not None  # storages list valid versions only
    if isinstance(read, OSError):
        error = f"metadata.json cannot be read ({read.strerror or read})"
        return Entry(version, key, ("unreadable", read.errno), None, error)
    metadata, error = parse_metadata(read[0])
    return Entry(version, key, read[1], metadata, error)


@dataclass(frozen=True, eq=False)
class Snapshot:
    """Every committed version in ascending precedence, as seen at one moment. Never mutated."""

    entries: tuple[Entry, ...]
    by_version: dict[str, Entry] = field(repr=False)
    _memo: dict[Hashable, Any] = field(default_factory=dict, repr=False)

    @cached_property
    def stamps(self) -> dict[str, Stamp]:
        """Each version's stamp: what the storage compares a refresh against."""
        return {entry.version: entry.stamp for entry in self.entries}

    @cached_property
    def stages(self) -> frozenset[str]:
        """Every stage some version is in."""
        return frozenset(stage for entry in self.entries if (stage := entry.stage) is not None)

    def memo(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """Compute a value derived from this snapshot once (answers, ETags, latest lookups)."""
        try:
            return self._memo[key]
        except KeyError:
            value = self._memo[key] = compute()
            return value

    def latest(self, stage: str | None = None, include_prerelease: bool = False) -> Entry | None:
        """The highest entry (of ``stage``), skipping prereleases unless asked. A ``stage`` that
        is not a string matches nothing."""
        key = ("latest", stage, include_prerelease)
        try:  # on every get_latest_*: no closure, one dict lookup
            return self._memo[key]
        except KeyError:
            found = self._find_latest(stage, include_prerelease)
            if stage is None or stage in self.stages:  # no memo entry per made-up stage name
                self._memo[key] = found
            return found
        except TypeError:  # an unhashable stage (a list): no version's stage is one
            return None

    def _find_latest(self, stage: str | None, include_prerelease: bool) -> Entry | None:
        for entry in reversed(self.entries):
            if not include_prerelease and is_prerelease(entry.key):
                continue
            if stage is None or entry.stage == stage:
                return entry
        return None


EMPTY = Snapshot((), {})
