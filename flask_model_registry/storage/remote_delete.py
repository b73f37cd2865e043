"""Deleting versions from a registry on object storage: ``metadata.json`` first (with the store's
conditional delete, so a racing promotion wins), then a tombstone in the manifest so other replicas
drop the version at their next refresh, then the rest of its prefix; and what ``gc`` finds without
``metadata.json`` (see :meth:`.base.Storage.leftovers`), from the same listing a refresh made."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import ConflictError
from ..versioning import sort_key
from .base import METADATA_FILE, Leftover, Stamp
from .manifest import ManifestDiscovery
from .objects import Objects, modified_time


class ObjectDeletes:
    """The delete and leftover methods of :class:`.remote.FsspecStorage` (a mixin: they use its
    filesystem, its single-object requests, its manifest and its listing of ``versions/``)."""

    fs: Any
    discovery: ManifestDiscovery
    _objects: Objects
    _versions: str

    if TYPE_CHECKING:  # what FsspecStorage provides

        def _path(self, version: str, name: str) -> str: ...
        def _store_errors(self, doing: str) -> contextlib.AbstractContextManager[None]: ...
        def _list(self, path: str) -> dict[str, Mapping[str, Any]]: ...
        def _list_versions(self) -> dict[str, Mapping[str, Any]]: ...

    def remove_version(self, version: str, expected: Stamp) -> None:
        with self._store_errors("a delete"):
            removed = self._objects.delete(self._path(version, METADATA_FILE), expected)
        if not removed:
            raise ConflictError(f"version {version} changed while being deleted")
        self.discovery.record_removal(version)

    def purge_version(self, version: str) -> int:
        self.discovery.record_removal(version)  # again: a killed delete may not have recorded it
        return self._remove_prefix(version, self._list(f"{self._versions}/{version}"))

    def _remove_prefix(self, version: str, objects: Mapping[str, Mapping[str, Any]]) -> int:
        """Remove the objects of ``version``'s prefix (``objects``: a listing of it), unless one is
        its ``metadata.json`` (then it is a version: left alone); the bytes freed."""
        if self._path(version, METADATA_FILE) in objects:
            return 0
        freed = 0
        with self._store_errors("removing a deleted version's objects"):
            for path, info in objects.items():
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm_file(path)
                    freed += int(info.get("size") or 0)
        return freed

    def _by_version(self) -> dict[str, dict[str, Mapping[str, Any]]]:
        """The listing of ``versions/``, grouped by SemVer-named prefix (other names left out)."""
        prefix = self._versions + "/"
        groups: dict[str, dict[str, Mapping[str, Any]]] = {}
        for path, info in self._list_versions().items():
            name = path.removeprefix(prefix).partition("/")[0]
            if path.startswith(prefix) and sort_key(name) is not None:
                groups.setdefault(name, {})[path] = info
        return groups

    def footprint(self, versions: Iterable[str]) -> dict[str, tuple[int, float]]:
        wanted = list(versions)
        if not wanted:
            return {}
        groups = self._by_version()
        found = {}
        for version in wanted:
            objects = groups.get(version, {})
            metadata = objects.get(self._path(version, METADATA_FILE))
            if metadata is not None:
                size = sum(int(info.get("size") or 0) for info in objects.values())
                found[version] = (size, modified_time(metadata) or 0.0)
        return found

    def leftovers(self) -> list[Leftover]:
        found = []
        for name, objects in self._by_version().items():
            if self._path(name, METADATA_FILE) not in objects:
                modified = max((modified_time(info) or 0.0 for info in objects.values()), default=0.0)
                size = sum(int(info.get("size") or 0) for info in objects.values())
                found.append(Leftover(name, "partial", modified, size))
        return found

    def remove_leftover(self, leftover: Leftover) -> int:
        if leftover.kind != "partial":
            return 0
        return self.purge_version(leftover.name)
