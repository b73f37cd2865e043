"""Single objects on each store: reads, conditional reads and conditional writes, and stamps.

What each store guarantees (see :mod:`.remote` for how publishing and promotion use them):
create-only writes, compare-and-swap on the object's ETag (generation on GCS), and a read that
answers "not modified" to the stamp last seen (the manifest's idle refresh, :mod:`.manifest`).
``memory://`` and other fsspec filesystems fall back to a lock in this process.

Where a store states an object's MD5 in its listing (S3's single-part ETags, Azure's
``Content-MD5``, GCS's ``md5Hash``), :meth:`Objects.content_md5` gives it, so that the manifest's
copy of an object can be checked against the object itself without reading it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import fsspec
from fsspec.asyn import sync

from ..errors import RootMissingError
from ..metadata import MAX_METADATA_READ_BYTES
from .base import Stamp

log = logging.getLogger(__name__)

_LIMIT = MAX_METADATA_READ_BYTES + 1  # bytes of a metadata object or audit event read at most
_S3_BUSY_RETRIES = 5
#: An S3 ETag that may be the MD5 of the object's bytes (a multipart upload's has a ``-<parts>`` tail).
_MD5_ETAG = re.compile(r'^"?([0-9a-fA-F]{32})"?$')


def md5(data: bytes) -> bytes:
    """The MD5 digest the stores state for ``data`` (a checksum here, not a security measure)."""
    return hashlib.md5(data, usedforsecurity=False).digest()


class Objects:
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

    def content_md5(self, info: Mapping[str, Any]) -> bytes | None:
        """The MD5 digest of the object's bytes as a listing or ``info`` entry states it; None where
        the store states none."""
        return None

    def stamp_md5(self, stamp: Stamp) -> bytes | None:
        """The MD5 digest of the object's bytes when its stamp is one (S3's single-part ETags)."""
        return None

    def read(self, path: str, limit: int | None = _LIMIT) -> tuple[bytes, Stamp]:
        """The object's bytes (no more than ``limit``, None: all of them) and stamp;
        FileNotFoundError when missing, PermissionError when the store refuses it (403, archived)."""
        stamp = self.stamp(self.fs.info(path))  # stamp first: a newer body can only fail a CAS
        return self.fs.cat_file(path, start=0, end=limit), stamp

    def list_names(self, path: str, start_after: str | None, limit: int | None) -> list[str] | None:
        """Names right inside ``path``, ascending, after ``start_after``, at most ``limit``, in as few
        requests as the store allows; None where the store has no such listing."""
        return None

    def read_if_changed(
        self, path: str, stamp: Stamp, limit: int | None = None
    ) -> tuple[bytes, Stamp] | None:
        """The object (no more than ``limit`` bytes), unless its stamp is still ``stamp`` (None): one
        small request."""
        if self.stamp(self.fs.info(path)) == stamp:
            return None
        return self.read(path, limit)

    def create(self, path: str, data: bytes) -> Stamp:
        """Write the object only if there is none (FileExistsError otherwise); its new stamp."""
        with self._lock:
            if self.fs.exists(path):
                raise FileExistsError(path)
            self.fs.pipe_file(path, data)
            return self.stamp(self.fs.info(path))

    def replace(self, path: str, data: bytes, expected: Stamp) -> Stamp | None:
        """Overwrite the object only if its stamp is still ``expected``: its new stamp, or None if
        the stamp was another (or the object is gone)."""
        with self._lock:
            try:
                current = self.stamp(self.fs.info(path))
            except FileNotFoundError:
                return None
            if current != expected:
                return None
            self.fs.pipe_file(path, data)
            return self.stamp(self.fs.info(path))

    def delete(self, path: str, expected: Stamp) -> bool:
        """Remove the object only if its stamp is still ``expected``: True when removed, False when
        its stamp was another; FileNotFoundError when it is gone."""
        with self._lock:
            if self.stamp(self.fs.info(path)) != expected:
                return False
            self.fs.rm_file(path)
            return True


class AsyncObjects(Objects):
    """A store whose own conditional requests do the work; reads run on fsspec's event loop."""

    concurrency = 16

    def read(self, path: str, limit: int | None = _LIMIT) -> tuple[bytes, Stamp]:
        return sync(self.fs.loop, self._read, path, limit)

    async def _read(self, path: str, limit: int | None, **condition: Any) -> tuple[bytes, Stamp]:
        raise NotImplementedError


def s3_error_code(exc: BaseException) -> str | None:
    """The S3 error code behind an exception s3fs translated (``PreconditionFailed``, ...)."""
    response = getattr(exc.__cause__, "response", None)
    return response.get("Error", {}).get("Code") if isinstance(response, dict) else None


class S3Objects(AsyncObjects):
    """S3 through s3fs: conditional PutObject on the ETag."""

    #: Whether an ETag of 32 hex digits is the MD5 of the object's bytes. It is not under SSE-KMS
    #: or SSE-C encryption: the first object read whole that disagrees with its ETag turns it off.
    etags_are_md5 = True

    def stamp(self, info: Mapping[str, Any]) -> Stamp:
        return info["ETag"]

    def stamp_md5(self, stamp: Stamp) -> bytes | None:
        match = _MD5_ETAG.match(stamp) if self.etags_are_md5 and isinstance(stamp, str) else None
        return bytes.fromhex(match.group(1)) if match else None

    def content_md5(self, info: Mapping[str, Any]) -> bytes | None:
        return self.stamp_md5(info.get("ETag"))

    async def _read(self, path: str, limit: int | None, **condition: Any) -> tuple[bytes, Stamp]:
        """One GetObject; with a ``limit``, a ranged one: the store sends no more than that."""
        bucket, key, _ = self.fs.split_path(path)
        if limit is not None:
            condition["Range"] = f"bytes=0-{limit - 1}"
        try:
            response = await self.fs._call_s3("get_object", Bucket=bucket, Key=key, **condition)
        except OSError as exc:
            if s3_error_code(exc) != "InvalidRange":
                raise
            # An empty object has no byte 0 to range over: its ETag alone (an unchanged one is 304).
            del condition["Range"]
            head = await self.fs._call_s3("head_object", Bucket=bucket, Key=key, **condition)
            return b"", head["ETag"]
        body = response["Body"]
        chunks: list[bytes] = []
        size = 0
        try:
            while limit is None or size < limit:  # a larger object is read no further
                chunk = await body.read(None if limit is None else limit - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        finally:
            body.close()
        data = b"".join(chunks)
        if limit is None or size < limit:  # the whole object: does its ETag state its MD5?
            self._check_etag(path, data, response["ETag"])
        return data, response["ETag"]

    def _check_etag(self, path: str, data: bytes, etag: str) -> None:
        expected = self.stamp_md5(etag)
        if expected is not None and md5(data) != expected:
            self.etags_are_md5 = False
            log.info("S3 ETags here are not MD5s (%s; SSE-KMS or SSE-C?): listings cannot check copies", path)

    def read_if_changed(
        self, path: str, stamp: Stamp, limit: int | None = None
    ) -> tuple[bytes, Stamp] | None:
        try:
            return sync(self.fs.loop, self._read, path, limit, IfNoneMatch=str(stamp))
        except OSError as exc:
            if s3_error_code(exc) in ("304", "NotModified"):
                return None
            raise

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
                raise RootMissingError(f"bucket {bucket!r} does not exist", kind="bucket") from None
            found = [item["Key"] for item in page.get("Contents", [])]
            found += [item["Prefix"].rstrip("/") for item in page.get("CommonPrefixes", [])]
            names += sorted(k[len(prefix) :] for k in found)
            if not page.get("IsTruncated"):
                break
            request["ContinuationToken"] = page["NextContinuationToken"]
        return names

    def _put(self, path: str, data: bytes, **condition: str) -> tuple[str | None, Stamp]:
        """PutObject under ``condition``: (None, the new ETag) when written, else why not."""
        bucket, key, _ = self.fs.split_path(path)
        try:
            response = self.fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, **condition)
        except OSError as exc:
            code = s3_error_code(exc)
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey"):
                return code, None
            raise
        return None, response["ETag"]

    def create(self, path: str, data: bytes) -> Stamp:
        for attempt in range(_S3_BUSY_RETRIES):
            code, etag = self._put(path, data, IfNoneMatch="*")
            if code != "ConditionalRequestConflict":
                break
            time.sleep(0.05 * (attempt + 1))  # 409: another conditional write is in flight; retry
        if code is not None:  # taken, or still being taken by another writer
            raise FileExistsError(path)
        return etag

    def replace(self, path: str, data: bytes, expected: Stamp) -> Stamp | None:
        return self._put(path, data, IfMatch=str(expected))[1]

    def delete(self, path: str, expected: Stamp) -> bool:
        """DeleteObject with ``If-Match: <ETag>`` (S3's conditional delete)."""
        bucket, key, _ = self.fs.split_path(path)
        try:
            self.fs.call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=str(expected))
        except OSError as exc:
            if s3_error_code(exc) == "PreconditionFailed":
                return False
            if isinstance(exc, FileNotFoundError) or s3_error_code(exc) == "NoSuchKey":
                raise FileNotFoundError(path) from None
            raise
        return True


class AzureObjects(AsyncObjects):
    """Azure Blob through adlfs's client: Put Blob with ``If-None-Match: *`` or ``If-Match: <ETag>``."""

    def stamp(self, info: Mapping[str, Any]) -> Stamp:
        return info["etag"]

    def content_md5(self, info: Mapping[str, Any]) -> bytes | None:
        settings = info.get("content_settings")
        if isinstance(settings, Mapping):
            digest = settings.get("content_md5")
        else:
            digest = getattr(settings, "content_md5", None)
        return bytes(digest) if digest else None

    def _client(self, path: str) -> Any:
        container, blob, _ = self.fs.split_path(path)
        return self.fs.service_client.get_blob_client(container=container, blob=blob)

    async def _read(self, path: str, limit: int | None, **condition: Any) -> tuple[bytes, Stamp]:
        from azure.core.exceptions import ResourceNotFoundError

        async with self._client(path) as client:
            try:
                # A ranged read (the SDK answers an empty blob's 416 itself): a larger blob is read
                # no further than the limit.
                stream = await client.download_blob(offset=0, length=limit, **condition)
            except ResourceNotFoundError:
                raise FileNotFoundError(path) from None
            return await stream.readall(), stream.properties.etag

    def read_if_changed(
        self, path: str, stamp: Stamp, limit: int | None = None
    ) -> tuple[bytes, Stamp] | None:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotModifiedError

        condition = {"etag": stamp, "match_condition": MatchConditions.IfModified}
        try:
            return sync(self.fs.loop, self._read, path, limit, **condition)
        except (ResourceNotModifiedError, ResourceModifiedError):  # 304 (Azurite: 412): the same
            return None

    async def _upload(self, path: str, data: bytes, **conditions: Any) -> Stamp:
        async with self._client(path) as client:
            return (await client.upload_blob(data, **conditions))["etag"]

    def create(self, path: str, data: bytes) -> Stamp:
        from azure.core.exceptions import ResourceExistsError

        try:
            return sync(self.fs.loop, self._upload, path, data, overwrite=False)
        except ResourceExistsError:
            raise FileExistsError(path) from None

    def replace(self, path: str, data: bytes, expected: Stamp) -> Stamp | None:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        condition = {"etag": expected, "match_condition": MatchConditions.IfNotModified}
        try:
            return sync(self.fs.loop, self._upload, path, data, overwrite=True, **condition)
        except (ResourceModifiedError, ResourceNotFoundError):
            return None

    async def _delete(self, path: str, **conditions: Any) -> None:
        async with self._client(path) as client:
            await client.delete_blob(**conditions)

    def delete(self, path: str, expected: Stamp) -> bool:
        """Delete Blob with ``If-Match: <ETag>``."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        condition = {"etag": expected, "match_condition": MatchConditions.IfNotModified}
        try:
            sync(self.fs.loop, self._delete, path, **condition)
        except ResourceModifiedError:  # 412; Azurite answers it for a missing blob too
            self.fs.invalidate_cache(path)
            self.fs.info(path)  # FileNotFoundError if it is gone
            return False
        except ResourceNotFoundError:
            raise FileNotFoundError(path) from None
        return True


class GCSObjects(AsyncObjects):
    """Google Cloud Storage through gcsfs: uploads with an ``ifGenerationMatch`` precondition."""

    concurrency = 4  # emulators (and small quotas) fall over beyond a few requests at once

    def stamp(self, info: Mapping[str, Any]) -> Stamp:
        return str(info["generation"])

    def content_md5(self, info: Mapping[str, Any]) -> bytes | None:
        digest = info.get("md5Hash")  # composite objects have none
        return base64.b64decode(digest) if isinstance(digest, str) and digest else None

    async def _read(self, path: str, limit: int | None, **condition: Any) -> tuple[bytes, Stamp]:
        """One media GET; with a ``limit``, a ranged one: the store sends no more than that."""
        from gcsfs.retry import HttpError

        bucket, key, _ = self.fs.split_path(path)
        ranged = {"headers": {"Range": f"bytes=0-{limit - 1}"}} if limit is not None else {}
        try:
            answer, data = await self.fs._call(
                "GET", "b/{}/o/{}", bucket, key, alt="media", **ranged, **condition
            )
        except HttpError as exc:
            if exc.code != 416:
                raise
            # An empty object has no byte 0 to range over: read it whole (nothing).
            answer, data = await self.fs._call("GET", "b/{}/o/{}", bucket, key, alt="media", **condition)
        return data[:limit], answer["X-Goog-Generation"]

    def read_if_changed(
        self, path: str, stamp: Stamp, limit: int | None = None
    ) -> tuple[bytes, Stamp] | None:
        """The object's metadata first (``ifGenerationNotMatch``: 304 on GCS; a small JSON answer
        on emulators that ignore it), then its bytes only if the generation moved on."""
        bucket, key, _ = self.fs.split_path(path)
        _, answer = self.fs.call("GET", "b/{}/o/{}", bucket, key, ifGenerationNotMatch=str(stamp))
        if not answer or str(json.loads(answer)["generation"]) == str(stamp):
            return None
        return self.read(path, limit)

    def _upload(self, path: str, data: bytes, generation: str) -> Stamp:
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
        answer = self.fs.call(
            "POST",
            f"{self.fs._location}/upload/storage/v1/b/{quote(bucket)}/o",
            uploadType="multipart",
            ifGenerationMatch=generation,
            headers={"Content-Type": f'multipart/related; boundary="{boundary}"'},
            data=body,
            json_out=True,
        )
        return str(answer["generation"])

    def create(self, path: str, data: bytes) -> Stamp:
        return self._upload(path, data, "0")

    def replace(self, path: str, data: bytes, expected: Stamp) -> Stamp | None:
        try:
            return self._upload(path, data, str(expected))
        except (FileExistsError, FileNotFoundError):
            return None

    def delete(self, path: str, expected: Stamp) -> bool:
        """Delete the object with ``ifGenerationMatch=<generation>`` (checked first as well: some
        emulators ignore that precondition on a delete)."""
        bucket, key, _ = self.fs.split_path(path)
        self.fs.invalidate_cache(path)
        if self.stamp(self.fs.info(path)) != expected:
            return False
        try:
            self.fs.call("DELETE", "b/{}/o/{}", bucket, key, ifGenerationMatch=str(expected))
        except FileExistsError:  # 412: another generation
            return False
        return True


OBJECTS: dict[str, type[Objects]] = {
    **dict.fromkeys(("s3", "s3a"), S3Objects),
    **dict.fromkeys(("az", "abfs", "abfss"), AzureObjects),
    **dict.fromkeys(("gs", "gcs"), GCSObjects),
}


def objects_for(scheme: str, fs: fsspec.AbstractFileSystem) -> Objects:
    """The single-object requests of ``scheme``'s store on ``fs``."""
    return OBJECTS.get(scheme, Objects)(fs)


def modified_time(info: Mapping[str, Any]) -> float | None:
    """When an object (a listing or ``info`` entry) was last written, as the store states it (S3
    ``LastModified``, Azure ``last_modified``, GCS ``updated``, ``memory://`` ``created``), in
    seconds since the epoch; None where it states none."""
    for key in ("LastModified", "last_modified", "updated", "mtime", "created"):
        value = info.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
        if isinstance(value, datetime):
            return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
    return None
