"""A registry on any fsspec filesystem: S3, Azure Blob, GCS, ``memory://`` and the rest.

Object stores have no rename, so a version is published artefact first, under a name no other
publisher uses (``model-<hex>.pkl``), and ``metadata.json`` last, written create-only: that
conditional write is the commit, and of two racing publishers exactly one wins while the other gets
:class:`VersionExistsError` and deletes only its own artefact. Promotions rewrite ``metadata.json``
with a compare-and-swap on the stamp the store keeps for it. What each store guarantees:

=================  ==================================  ==================================  ==========
store              create-only (publish, audit)        compare-and-swap (promote, edit)    stamp
=================  ==================================  ==================================  ==========
S3 (s3fs)          PutObject ``If-None-Match: *``      PutObject ``If-Match: <ETag>``      ETag
Azure (adlfs)      Put Blob ``If-None-Match: *``       Put Blob ``If-Match: <ETag>``       ETag
GCS (gcsfs)        upload ``ifGenerationMatch=0``      upload ``ifGenerationMatch=<gen>``  generation
memory:// & other  a lock in this process              a lock in this process              mtime/size
=================  ==================================  ==================================  ==========

``memory://`` lives in one process, so the lock makes it exact; any other fsspec filesystem is safe
against writers in this process only.

Clients retry a request whose answer was lost, and the store then refuses the retry of a conditional
write that had landed. So a refused write is read back: if the object holds exactly our bytes, the
write counts as done, and an artefact is never deleted once a commit may have named it.

Discovery asks the registry's manifest first (:mod:`.manifest`): an idle refresh is one conditional
request, a cold start one GET and one listing, and a full listing runs every ``full_refresh``
seconds; metadata that must be fetched is fetched concurrently with a small bound per store. The
single-object requests of each store are in :mod:`.objects`. fsspec's listing caches are off and
invalidated before each listing, so ``refresh_interval`` is the only cache. Artefacts stream from
the store into a spooled temporary file (in memory up to :data:`SPOOL_IN_MEMORY`, on disk beyond),
which the registry hashes and unpickles: a large model is never held twice in memory.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO, cast

import fsspec

from ..errors import (
    ConflictError,
    RootMissingError,
    StorageBackendMissingError,
    StorageUnavailableError,
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
    Read,
    Stamp,
    Storage,
    check_state_name,
)
from .manifest import DEFAULT_FULL_REFRESH, MANIFEST_FILE, Listed, ManifestDiscovery
from .objects import AsyncObjects, modified_time, objects_for
from .remote_delete import ObjectDeletes

#: Seconds a change made by another host may stay unseen on object storage, unless configured.
DEFAULT_REFRESH_INTERVAL = 2.0
#: Artefacts up to this size are buffered in memory while loaded; larger ones spill to a temp file.
SPOOL_IN_MEMORY = 32 << 20
#: The extra that installs the fsspec backend of each URL scheme.
EXTRAS = {
    "s3": "s3",
    "s3a": "s3",
    "az": "azure",
    "abfs": "azure",
    "abfss": "azure",
    "gs": "gcs",
    "gcs": "gcs",
}
_CHUNK = 1 << 20
_BLOCK = 8 << 20  # bytes per ranged GET or upload part while streaming an artefact


def filesystem_class(scheme: str) -> type[fsspec.AbstractFileSystem]:
    """fsspec's class for ``scheme``; StorageBackendMissingError naming the extra if not installed."""
    try:
        return fsspec.get_filesystem_class(scheme)
    except ImportError as exc:
        extra = EXTRAS.get(scheme)
        how = f"pip install 'flask-model-registry[{extra}]'" if extra else str(exc)
        raise StorageBackendMissingError(
            f"{scheme}:// needs a backend that is not installed: {how}"
        ) from None
    except ValueError:
        raise StorageBackendMissingError(f"no fsspec backend is known for {scheme}://") from None


def safe_label(url: str) -> str:
    """``url`` without a ``user:password@`` part or a query (which may carry a SAS token)."""
    scheme, _, rest = url.partition("://")
    head, slash, tail = rest.split("?", 1)[0].partition("/")
    userinfo, at, host = head.rpartition("@")
    if at and ":" in userinfo:
        head = host
    return f"{scheme}://{head}{slash}{tail}"


class FsspecPublication(Publication):
    """A version being published: the artefact under a unique name, then metadata.json create-only."""

    def __init__(self, storage: FsspecStorage, version: str) -> None:
        self._storage = storage
        self._version = version
        self.artifact_file = f"model-{uuid.uuid4().hex}.pkl"  # racing publishers never share one
        self._artifact = storage._path(version, self.artifact_file)
        self._signature: str | None = None
        self._committing = False

    @contextlib.contextmanager
    def open_artifact(self) -> Iterator[BinaryIO]:
        with self._storage.fs.open(self._artifact, "wb", block_size=_BLOCK) as f:
            yield f

    def add_signature(self, data: bytes) -> None:
        # Create-only: of racing signed publishers, the one whose signature lands first commits.
        path = self._storage._path(self._version, SIGNATURE_FILE)
        try:
            self._storage.create_once(path, data)
        except FileExistsError:
            raise FsspecStorage.exists_error(self._version) from None
        self._signature = path

    def commit(self, metadata: bytes) -> None:
        self._committing = True
        try:
            path = self._storage._path(self._version, METADATA_FILE)
            self._storage.create_once(path, metadata)
        except FileExistsError:
            self._committing = False  # refused: the metadata there is another publisher's
            raise FsspecStorage.exists_error(self._version) from None
        self._storage.discovery.record(self._version, path)

    def abort(self) -> None:
        # A commit that failed without an answer may have landed all the same, and then its
        # metadata names this artefact: keep it (an unreferenced object at worst).
        if self._committing:
            return
        for path in (self._artifact, self._signature):
            if path is not None:
                with contextlib.suppress(FileNotFoundError):
                    self._storage.fs.rm_file(path)


class FsspecStorage(ObjectDeletes, Storage):
    """Versions as objects under ``<root>/versions/`` on any fsspec filesystem.

    ``storage_options`` go to the fsspec filesystem unchanged (after defaults that turn off its
    instance and listing caches). ``refresh_interval`` bounds how long a change made elsewhere stays
    unseen: :data:`DEFAULT_REFRESH_INTERVAL` on object storage, 0 on ``memory://`` (in-process).
    ``full_refresh``: seconds between full listings, which find copies made without the registry
    (:data:`~.manifest.DEFAULT_FULL_REFRESH`); 0 lists at every refresh.
    """

    private_artifacts = True  # each load streams the artefact into a spooled file of its own

    def __init__(
        self,
        root: str,
        *,
        storage_options: Mapping[str, Any] | None = None,
        refresh_interval: float | None = None,
        full_refresh: float | None = None,
    ) -> None:
        scheme = root.partition("://")[0]
        cls = filesystem_class(scheme)
        options = {"skip_instance_cache": True, "use_listings_cache": False, **(storage_options or {})}
        self.fs: fsspec.AbstractFileSystem = cls(**options)
        self.root = cls._strip_protocol(root).rstrip("/")
        self._label = f"{scheme} registry {safe_label(root)}"
        self._objects = objects_for(scheme, self.fs)
        #: How many objects one scan or history read fetches at once.
        self.concurrency = self._objects.concurrency
        self._versions = f"{self.root}/{VERSIONS_DIR}"
        self._audit = f"{self.root}/{AUDIT_DIR}"
        if refresh_interval is None:
            refresh_interval = 0.0 if scheme == "memory" else DEFAULT_REFRESH_INTERVAL
        self._refresh_interval = refresh_interval
        self._next_scan = 0.0
        # Inside reusing_listing(): the one listing of versions/ made there (None: none yet).
        self._reused: dict[str, Mapping[str, Any]] | None = None
        self._reusing = False
        self.discovery = ManifestDiscovery(
            self._objects,
            f"{self.root}/{MANIFEST_FILE}",
            list_metadata=self.list_metadata,
            fetch=self.read_metadata_many,
            full_refresh=DEFAULT_FULL_REFRESH if full_refresh is None else full_refresh,
        )

    def describe(self) -> str:
        return self._label

    @staticmethod
    def exists_error(version: str) -> VersionExistsError:
        return VersionExistsError(f"version {version} already exists; versions are immutable")

    def _path(self, version: str, name: str) -> str:
        return f"{self._versions}/{version}/{name}"

    def fetch(self, path: str) -> tuple[bytes, Stamp]:
        """One GET: the object's bytes and stamp. Every metadata and audit read goes through here."""
        with self._store_errors("a read"):
            return self._objects.read(path)

    @contextlib.contextmanager
    def _store_errors(self, doing: str) -> Iterator[None]:
        """Errors about one object (OSError: not found, refused) pass; any other failure of the store
        (each backend has its own: botocore, azure-core, aiohttp …) is a StorageUnavailableError."""
        try:
            yield
        except OSError:
            raise
        except Exception as exc:
            raise StorageUnavailableError(
                f"{self._label}: {doing} failed ({type(exc).__name__}); is the store reachable?"
            ) from exc

    def _fetch_all(self, paths: Mapping[str, str]) -> dict[str, tuple[bytes, Stamp] | OSError]:
        """Fetch many objects (a key: its path), a few at a time; those gone since listed are left
        out, those the store refuses to give (403, an archived storage class) map to the error."""

        def one(item: tuple[str, str]) -> tuple[str, tuple[bytes, Stamp] | OSError | None]:
            try:
                return item[0], self.fetch(item[1])
            except FileNotFoundError:
                return item[0], None
            except PermissionError as exc:
                return item[0], exc

        workers = min(self.concurrency, len(paths))
        if workers <= 1:
            results = [one(item) for item in paths.items()]
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="registry-fetch") as pool:
                results = list(pool.map(one, paths.items()))
        return {key: got for key, got in results if got is not None}

    def _list(self, path: str) -> dict[str, Mapping[str, Any]]:
        """Every object below ``path`` with its details, fresh from the store (one paged listing).

        S3 and GCS answer a listing in a bucket that does not exist with "not found": that is a
        misconfigured root, not an empty registry. (Azure lists a missing container as empty.)
        """
        self.fs.invalidate_cache(path)
        try:
            return self.fs.find(path, detail=True)
        except FileNotFoundError:
            if isinstance(self._objects, AsyncObjects):
                bucket = self.fs.split_path(path)[0]
                raise RootMissingError(
                    f"{self._label}: bucket {bucket!r} does not exist", kind="bucket"
                ) from None
            return {}
        except Exception as exc:  # each backend has its own (botocore, azure-core, aiohttp …)
            raise StorageUnavailableError(
                f"{self._label}: listing failed ({type(exc).__name__}); is the store reachable?"
            ) from exc

    def unchanged(self) -> bool:
        return time.monotonic() < self._next_scan

    def may_have_changed(self) -> bool:
        return time.monotonic() >= self._next_scan

    def refresh(self, known: Mapping[str, Stamp]) -> tuple[list[str], dict[str, Read]] | None:
        """The manifest first (one conditional request while nothing changed), a full listing
        every ``full_refresh`` seconds (see :mod:`.manifest`)."""
        started = time.monotonic()
        try:
            changes = self.discovery.refresh(known)
        except BaseException as exc:  # a store that failed is left alone for an interval: no storm
            self._next_scan = time.monotonic() + self._refresh_interval
            if isinstance(exc, Exception) and not isinstance(exc, StorageUnavailableError):
                raise StorageUnavailableError(  # each backend has its own (botocore, azure-core …)
                    f"{self._label}: no answer ({type(exc).__name__}); is the store reachable?"
                ) from exc
            raise
        self._next_scan = started + self._refresh_interval
        return changes

    def scan(self) -> dict[str, Stamp]:
        """One paged listing gives every version and its metadata's stamp; nothing is fetched."""
        return {version: item.stamp for version, item in self.list_metadata().items()}

    @contextlib.contextmanager
    def reusing_listing(self) -> Iterator[None]:
        """Within this, the first listing of ``versions/`` answers every later one (a refresh's and
        :meth:`leftovers`'): ``gc --dry-run`` costs one listing and the manifest."""
        self._reusing, self._reused = True, None
        try:
            yield
        finally:
            self._reusing, self._reused = False, None

    def _list_versions(self) -> dict[str, Mapping[str, Any]]:
        """Every object below ``versions/`` with its details (see :meth:`reusing_listing`)."""
        if self._reused is not None:
            return self._reused
        listing = self._list(self._versions)
        if self._reusing:
            self._reused = listing
        return listing

    def list_metadata(self) -> dict[str, Listed]:
        """Every version's ``metadata.json`` as one paged listing shows it: stamp, size, and MD5
        where the store states it."""
        listing = self._list_versions()
        prefix = self._versions + "/"
        found: dict[str, Listed] = {}
        for path, info in listing.items():
            version, _, name = path.removeprefix(prefix).partition("/")
            if path.startswith(prefix) and name == METADATA_FILE and sort_key(version) is not None:
                objects = self._objects
                found[version] = Listed(
                    objects.stamp(info), int(info.get("size") or 0), objects.content_md5(info)
                )
        return found

    def read_metadata(self, version: str) -> tuple[bytes, Stamp]:
        return self.fetch(self._path(version, METADATA_FILE))

    def metadata_mtime(self, version: str) -> float | None:
        """The time the store states for the object (S3 ``LastModified``, Azure ``last_modified``,
        GCS ``updated``, ``memory://`` ``created``): one ``HEAD``."""
        try:
            with self._store_errors("a metadata time"):
                info = self.fs.info(self._path(version, METADATA_FILE))
        except OSError:
            return None
        return modified_time(info)

    def read_metadata_many(self, versions: Iterable[str]) -> dict[str, tuple[bytes, Stamp] | OSError]:
        """Only what changed since the last scan is asked for; fetched a few at a time."""
        return dict(self._fetch_all({v: self._path(v, METADATA_FILE) for v in versions}))

    def holds(self, path: str, data: bytes) -> Stamp | None:
        """The object's stamp if it is exactly ``data``, else None. A conditional write the store
        refuses may be our own, retried by the client after its first answer was lost: it landed."""
        try:
            found, stamp = self._objects.read(path)
        except FileNotFoundError:
            return None
        return stamp if found == data else None

    def create_once(self, path: str, data: bytes) -> Stamp:
        """Create the object (its stamp); FileExistsError if another one is there (not if ours is)."""
        try:
            return self._objects.create(path, data)
        except FileExistsError:
            stamp = self.holds(path, data)
            if stamp is None:
                raise
            return stamp

    def replace_metadata(self, version: str, data: bytes, expected: Stamp) -> bool:
        path = self._path(version, METADATA_FILE)
        if self._objects.replace(path, data, expected) is not None:
            wrote = True
        elif self.holds(path, data) is not None:
            wrote = False
        else:
            raise ConflictError(f"version {version} changed while being updated")
        self.discovery.record(version, path)  # also when already ours: its update may not have landed
        return wrote

    def read_signature(self, version: str) -> bytes:
        return self.fetch(self._path(version, SIGNATURE_FILE))[0]

    def write_signature(self, version: str, data: bytes) -> None:
        if not self.fs.exists(self._path(version, METADATA_FILE)):
            raise FileNotFoundError(f"version {version} is not committed")
        with self._store_errors("writing a signature"):
            self.fs.pipe_file(self._path(version, SIGNATURE_FILE), data)

    def begin_publication(self, version: str) -> Publication:
        if self.fs.exists(self._path(version, METADATA_FILE)):
            raise self.exists_error(version)
        return FsspecPublication(self, version)

    @contextlib.contextmanager
    def open_artifact(self, version: str, file: str) -> Iterator[BinaryIO]:
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as spool:
            try:
                with self.fs.open(self._path(version, file), "rb", block_size=_BLOCK) as source:
                    shutil.copyfileobj(source, spool, _CHUNK)
            except FileNotFoundError:
                raise
            except Exception as exc:  # the store failed, not the artefact: worth a retry later
                raise StorageUnavailableError(
                    f"{self._label}: reading the artefact of {version} failed ({type(exc).__name__})"
                ) from exc
            spool.seek(0)
            yield cast(BinaryIO, spool)

    def read_state(self, name: str) -> tuple[bytes, Stamp]:
        return self.fetch(f"{self.root}/{STATE_DIR}/{check_state_name(name)}")

    def write_state(self, name: str, data: bytes, expected: Stamp | None) -> Stamp:
        path = f"{self.root}/{STATE_DIR}/{check_state_name(name)}"
        with self._store_errors("writing a state document"):
            try:
                written = (
                    self._objects.create(path, data)
                    if expected is None
                    else self._objects.replace(path, data, expected)
                )
            except FileExistsError:
                written = None
            if written is None:  # refused; unless it was our own write, retried after a lost answer
                written = self.holds(path, data)
        if written is None:
            raise ConflictError(f"{STATE_DIR}/{name} changed while being updated")
        return written

    def audit_create(self, names: Sequence[str], data: bytes) -> None:
        for name in names:
            self.create_once(f"{self._audit}/{name}", data)

    def audit_read(self, name: str) -> bytes:
        return self.fetch(f"{self._audit}/{name}")[0]

    def audit_delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError), self._store_errors("deleting an audit event"):
            self.fs.rm_file(f"{self._audit}/{name}")

    def audit_list(self, folder: str, start_after: str | None = None, limit: int | None = None) -> list[str]:
        path = f"{self._audit}/{folder}".rstrip("/")
        with self._store_errors("listing the audit trail"):
            names = self._objects.list_names(path, start_after, limit)
        if names is None:  # no ordered, paged listing: list it all
            self.fs.invalidate_cache(path)
            try:
                with self._store_errors("listing the audit trail"):
                    listed = self.fs.ls(path, detail=False)
            except FileNotFoundError:
                listed = []
            names = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in listed)
            names = [n for n in names if start_after is None or n > start_after][:limit]
        return [name for name in names if not name.startswith(".")]
