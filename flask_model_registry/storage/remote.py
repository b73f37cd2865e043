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

Discovery costs one paged, recursive listing of ``versions/`` per refresh: the listing carries each
``metadata.json``'s stamp, and only those whose stamp changed since the last refresh are fetched,
concurrently with a small bound per store. fsspec's listing caches are off and invalidated before
each listing, so ``refresh_interval`` is the only cache. Artefacts stream from the store into a
spooled temporary file (in memory up to :data:`SPOOL_IN_MEMORY`, on disk beyond), which the
registry hashes and unpickles: a large model is never held twice in memory.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, BinaryIO, cast

import fsspec
from fsspec.asyn import sync

from ..errors import (
    ConflictError,
    StorageBackendMissingError,
    StorageUnavailableError,
    VersionExistsError,
)
from ..versioning import sort_key
from .base import AUDIT_DIR, MAX_METADATA_READ_BYTES, METADATA_FILE, VERSIONS_DIR, Publication, Stamp, Storage

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
_S3_BUSY_RETRIES = 5


class _Objects:
    """Reads and conditional writes of single objects, and the stamp a listing gives an object.

    This fallback serves ``memory://`` and any fsspec filesystem without a store-specific subclass:
    its conditional writes are atomic through a lock in this process only.
    """

    #: How many objects are fetched at once.
    concurrency = 8
    _lock = threading.Lock()  # one for the process: memory:// is shared by all its instances

    def __init__(self, fs: fsspec.AbstractFileSystem) -> None:
        self.fs = fs

    def stamp(self, info: Mapping[str, Any]) -> Stamp:
        """A token that changes whenever the object does, from a listing or ``info`` entry."""
        for key in ("ETag", "etag", "mtime", "LastModified", "last_modified", "created"):
            value = info.get(key)
            if value is not None:
                return (value.timestamp() if isinstance(value, datetime) else value, info.get("size"))
        return (None, info.get("size"))

    def read(self, path: str) -> tuple[bytes, Stamp]:
        """The object's bytes (no more than :data:`MAX_METADATA_READ_BYTES` + 1) and stamp;
        FileNotFoundError when missing, PermissionError when the store refuses it (403, archived)."""
        stamp = self.stamp(self.fs.info(path))  # stamp first: a newer body can only fail a CAS
        return self.fs.cat_file(path, start=0, end=MAX_METADATA_READ_BYTES + 1), stamp

    def list_names(self, path: str, start_after: str | None, limit: int | None) -> list[str] | None:
        """Names right inside ``path``, ascending, after ``start_after``, at most ``limit``, in as few
        requests as the store allows; None where the store has no such listing."""
        return None

    def create(self, path: str, data: bytes) -> None:
        """Write the object only if there is none; FileExistsError otherwise."""
        with self._lock:
            if self.fs.exists(path):
                raise FileExistsError(path)
            self.fs.pipe_file(path, data)

    def replace(self, path: str, data: bytes, expected: Stamp) -> bool:
        """Overwrite the object only if its stamp is still ``expected``; False if not (or gone)."""
        with self._lock:
            try:
                current = self.stamp(self.fs.info(path))
            except FileNotFoundError:
                return False
            if current != expected:
                return False
            self.fs.pipe_file(path, data)
            return True


class _AsyncObjects(_Objects):
    """A store whose own conditional requests do the work; reads run on fsspec's event loop."""

    concurrency = 16

    def read(self, path: str) -> tuple[bytes, Stamp]:
        return sync(self.fs.loop, self._read, path)

    async def _read(self, path: str) -> tuple[bytes, Stamp]:
        raise NotImplementedError


def _s3_error_code(exc: BaseException) -> str | None:
    """The S3 error code behind an exception s3fs translated (``PreconditionFailed``, ...)."""
    response = getattr(exc.__cause__, "response", None)
    return response.get("Error", {}).get("Code") if isinstance(response, dict) else None


class _S3Objects(_AsyncObjects):
    """S3 through s3fs: conditional PutObject on the ETag."""

    def stamp(self, info: Mapping[str, Any]) -> Stamp:
        return info["ETag"]

    async def _read(self, path: str) -> tuple[bytes, Stamp]:
        bucket, key, _ = self.fs.split_path(path)
        response = await self.fs._call_s3("get_object", Bucket=bucket, Key=key)
        body = response["Body"]
        chunks: list[bytes] = []
        size = 0
        try:
            while size <= MAX_METADATA_READ_BYTES:  # a larger object is read no further
                chunk = await body.read(MAX_METADATA_READ_BYTES + 1 - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            return b"".join(chunks), response["ETag"]
        finally:
            body.close()

    def list_names(self, path: str, start_after: str | None, limit: int | None) -> list[str] | None:
        """ListObjectsV2 from ``StartAfter``, a page of at most ``limit`` keys at a time."""
        bucket, key, _ = self.fs.split_path(path)
        prefix = f"{key}/"
        names: list[str] = []
        request: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "Delimiter": "/"}
        if start_after is not None:
            request["StartAfter"] = prefix + start_after
        while limit is None or len(names) < limit:
            if limit is not None:
                request["MaxKeys"] = min(1000, limit - len(names))
            try:
                page = self.fs.call_s3("list_objects_v2", **request)
            except FileNotFoundError:
                raise StorageUnavailableError(f"bucket {bucket!r} does not exist") from None
            found = [item["Key"] for item in page.get("Contents", [])]
            found += [item["Prefix"].rstrip("/") for item in page.get("CommonPrefixes", [])]
            names += sorted(k[len(prefix) :] for k in found)
            if not page.get("IsTruncated"):
                break
            request["ContinuationToken"] = page["NextContinuationToken"]
        return names

    def _put(self, path: str, data: bytes, **condition: str) -> str | None:
        """PutObject under ``condition``: None when written, else why the condition failed."""
        bucket, key, _ = self.fs.split_path(path)
        try:
            self.fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, **condition)
        except OSError as exc:
            code = _s3_error_code(exc)
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey"):
                return code
            raise
        return None

    def create(self, path: str, data: bytes) -> None:
        for attempt in range(_S3_BUSY_RETRIES):
            code = self._put(path, data, IfNoneMatch="*")
            if code != "ConditionalRequestConflict":
                break
            time.sleep(0.05 * (attempt + 1))  # 409: another conditional write is in flight; retry
        if code is not None:  # taken, or still being taken by another writer
            raise FileExistsError(path)

    def replace(self, path: str, data: bytes, expected: Stamp) -> bool:
        return self._put(path, data, IfMatch=str(expected)) is None


class _AzureObjects(_AsyncObjects):
    """Azure Blob through adlfs's client: Put Blob with ``If-None-Match: *`` or ``If-Match: <ETag>``."""

    def stamp(self, info: Mapping[str, Any]) -> Stamp:
        return info["etag"]

    def _client(self, path: str) -> Any:
        container, blob, _ = self.fs.split_path(path)
        return self.fs.service_client.get_blob_client(container=container, blob=blob)

    async def _read(self, path: str) -> tuple[bytes, Stamp]:
        from azure.core.exceptions import ResourceNotFoundError

        async with self._client(path) as client:
            try:
                # A ranged read (the SDK answers an empty blob's 416 itself): a larger blob is read
                # no further than the limit + 1 bytes.
                stream = await client.download_blob(offset=0, length=MAX_METADATA_READ_BYTES + 1)
            except ResourceNotFoundError:
                raise FileNotFoundError(path) from None
            return await stream.readall(), stream.properties.etag

    async def _upload(self, path: str, data: bytes, **conditions: Any) -> None:
        async with self._client(path) as client:
            await client.upload_blob(data, **conditions)

    def create(self, path: str, data: bytes) -> None:
        from azure.core.exceptions import ResourceExistsError

        try:
            sync(self.fs.loop, self._upload, path, data, overwrite=False)
        except ResourceExistsError:
            raise FileExistsError(path) from None

    def replace(self, path: str, data: bytes, expected: Stamp) -> bool:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        condition = {"etag": expected, "match_condition": MatchConditions.IfNotModified}
        try:
            sync(self.fs.loop, self._upload, path, data, overwrite=True, **condition)
        except (ResourceModifiedError, ResourceNotFoundError):
            return False
        return True


class _GCSObjects(_AsyncObjects):
    """Google Cloud Storage through gcsfs: uploads with an ``ifGenerationMatch`` precondition."""

    concurrency = 4  # emulators (and small quotas) fall over beyond a few requests at once

    def stamp(self, info: Mapping[str, Any]) -> Stamp:
        return str(info["generation"])

    async def _read(self, path: str) -> tuple[bytes, Stamp]:
        bucket, key, _ = self.fs.split_path(path)
        headers, data = await self.fs._call("GET", "b/{}/o/{}", bucket, key, alt="media")
        return data[: MAX_METADATA_READ_BYTES + 1], headers["X-Goog-Generation"]

    def _upload(self, path: str, data: bytes, generation: str) -> None:
        """A multipart upload that the store refuses (412, FileExistsError) unless the object's
        generation is ``generation`` ("0": no object)."""
        from gcsfs.core import quote

        bucket, key, _ = self.fs.split_path(path)
        boundary = uuid.uuid4().hex
        body = b"".join(
            [
                f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n".encode(),
                json.dumps({"name": key}).encode(),
                f"\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n".encode(),
                data,
                f"\r\n--{boundary}--".encode(),
            ]
        )
        self.fs.call(
            "POST",
            f"{self.fs._location}/upload/storage/v1/b/{quote(bucket)}/o",
            uploadType="multipart",
            ifGenerationMatch=generation,
            headers={"Content-Type": f'multipart/related; boundary="{boundary}"'},
            data=body,
            json_out=True,
        )

    def create(self, path: str, data: bytes) -> None:
        self._upload(path, data, "0")

    def replace(self, path: str, data: bytes, expected: Stamp) -> bool:
        try:
            self._upload(path, data, str(expected))
        except (FileExistsError, FileNotFoundError):
            return False
        return True


_OBJECTS: dict[str, type[_Objects]] = {
    **dict.fromkeys(("s3", "s3a"), _S3Objects),
    **dict.fromkeys(("az", "abfs", "abfss"), _AzureObjects),
    **dict.fromkeys(("gs", "gcs"), _GCSObjects),
}


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
        self._committing = False

    @contextlib.contextmanager
    def open_artifact(self) -> Iterator[BinaryIO]:
        with self._storage.fs.open(self._artifact, "wb", block_size=_BLOCK) as f:
            yield f

    def commit(self, metadata: bytes) -> None:
        self._committing = True
        try:
            self._storage.create_once(self._storage._path(self._version, METADATA_FILE), metadata)
        except FileExistsError:
            self._committing = False  # refused: the metadata there is another publisher's
            raise FsspecStorage.exists_error(self._version) from None

    def abort(self) -> None:
        # A commit that failed without an answer may have landed all the same, and then its
        # metadata names this artefact: keep it (an unreferenced object at worst).
        if self._committing:
            return
        with contextlib.suppress(FileNotFoundError):
            self._storage.fs.rm_file(self._artifact)


class FsspecStorage(Storage):
    """Versions as objects under ``<root>/versions/`` on any fsspec filesystem.

    ``storage_options`` go to the fsspec filesystem unchanged (after defaults that turn off its
    instance and listing caches). ``refresh_interval`` bounds how long a change made elsewhere stays
    unseen: :data:`DEFAULT_REFRESH_INTERVAL` on object storage, 0 on ``memory://`` (in-process).
    """

    private_artifacts = True  # each load streams the artefact into a spooled file of its own

    def __init__(
        self,
        root: str,
        *,
        storage_options: Mapping[str, Any] | None = None,
        refresh_interval: float | None = None,
    ) -> None:
        scheme = root.partition("://")[0]
        cls = filesystem_class(scheme)
        options = {"skip_instance_cache": True, "use_listings_cache": False, **(storage_options or {})}
        self.fs: fsspec.AbstractFileSystem = cls(**options)
        self.root = cls._strip_protocol(root).rstrip("/")
        self._label = f"{scheme} registry {safe_label(root)}"
        self._objects = _OBJECTS.get(scheme, _Objects)(self.fs)
        #: How many objects one scan or history read fetches at once.
        self.concurrency = self._objects.concurrency
        self._versions = f"{self.root}/{VERSIONS_DIR}"
        self._audit = f"{self.root}/{AUDIT_DIR}"
        if refresh_interval is None:
            refresh_interval = 0.0 if scheme == "memory" else DEFAULT_REFRESH_INTERVAL
        self._refresh_interval = refresh_interval
        self._next_scan = 0.0

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
            if isinstance(self._objects, _AsyncObjects):
                bucket = self.fs.split_path(path)[0]
                raise StorageUnavailableError(f"{self._label}: bucket {bucket!r} does not exist") from None
            return {}
        except Exception as exc:  # each backend has its own (botocore, azure-core, aiohttp …)
            raise StorageUnavailableError(
                f"{self._label}: listing failed ({type(exc).__name__}); is the store reachable?"
            ) from exc

    def unchanged(self) -> bool:
        return time.monotonic() < self._next_scan

    def may_have_changed(self) -> bool:
        return time.monotonic() >= self._next_scan

    def scan(self) -> dict[str, Stamp]:
        """One paged listing gives every version and its metadata's stamp; nothing is fetched."""
        started = time.monotonic()
        try:
            listing = self._list(self._versions)
        except BaseException:  # a store that failed is left alone for an interval: no storm
            self._next_scan = time.monotonic() + self._refresh_interval
            raise
        self._next_scan = started + self._refresh_interval
        prefix = self._versions + "/"
        stamps: dict[str, Stamp] = {}
        for path, info in listing.items():
            version, _, name = path.removeprefix(prefix).partition("/")
            if path.startswith(prefix) and name == METADATA_FILE and sort_key(version) is not None:
                stamps[version] = self._objects.stamp(info)
        return stamps

    def read_metadata(self, version: str) -> tuple[bytes, Stamp]:
        return self.fetch(self._path(version, METADATA_FILE))

    def read_metadata_many(self, versions: Iterable[str]) -> dict[str, tuple[bytes, Stamp] | OSError]:
        """Only what changed since the last scan is asked for; fetched a few at a time."""
        return dict(self._fetch_all({v: self._path(v, METADATA_FILE) for v in versions}))

    def holds(self, path: str, data: bytes) -> bool:
        """Whether the object at ``path`` is exactly ``data``. A conditional write the store refuses
        may be our own, retried by the client after its first answer was lost: then it landed."""
        try:
            return self._objects.read(path)[0] == data
        except FileNotFoundError:
            return False

    def create_once(self, path: str, data: bytes) -> None:
        """Create the object; FileExistsError if another one is there (not if ours already is)."""
        try:
            self._objects.create(path, data)
        except FileExistsError:
            if not self.holds(path, data):
                raise

    def replace_metadata(self, version: str, data: bytes, expected: Stamp) -> bool:
        path = self._path(version, METADATA_FILE)
        if self._objects.replace(path, data, expected):
            return True
        if self.holds(path, data):
            return False
        raise ConflictError(f"version {version} changed while being updated")

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
