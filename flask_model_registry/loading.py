"""Loading an artefact: exactly the bytes whose sha256 was checked, never a file that blocks.

Unpickling runs code, so what is unpickled must be the very bytes that were hashed. A storage whose
:meth:`~flask_model_registry.storage.Storage.open_artifact` yields a private copy (object storage
spools one) is hashed and unpickled in place; any other (local disk, where a file may be rewritten
in place between the hash and the load) is read once into memory, hashed there, and unpickled
from that memory: the load holds the artefact's bytes beside the model while it runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import platform
import re
from collections.abc import Iterator, Mapping
from typing import IO, Any, BinaryIO

import cloudpickle

from .errors import CorruptVersionError, StorageUnavailableError, UntrustedArtefactError
from .pickle_allow import PickleAllowList
from .storage import Storage
from .storage.base import DEFAULT_ARTIFACT_FILE

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_SAFE_FILE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def artifact_of(version: str, metadata: Mapping[str, Any]) -> tuple[str, str | None, Mapping[str, Any]]:
    """The artefact's file name, recorded sha256 (hand-made versions may have neither) and the whole
    ``artifact`` object of the metadata; :class:`CorruptVersionError` for what cannot be trusted."""
    artifact = metadata.get("artifact")
    if artifact is None:
        return DEFAULT_ARTIFACT_FILE, None, {}
    if not isinstance(artifact, dict):
        raise CorruptVersionError(f"version {version}: 'artifact' in metadata.json is not an object")
    file = artifact.get("file", DEFAULT_ARTIFACT_FILE)
    sha = artifact.get("sha256")
    if not (isinstance(file, str) and file and file[0] != "." and _SAFE_FILE.issuperset(file)):
        raise CorruptVersionError(f"version {version}: artefact file name {file!r} is not allowed")
    if sha is not None and not (isinstance(sha, str) and _SHA256.fullmatch(sha)):
        raise CorruptVersionError(f"version {version}: recorded sha256 is not 64 hex digits")
    return file, sha, artifact


class HashingWriter:
    """A file wrapper that hashes and counts what is written through it (a save's artefact)."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self._f.write(data)


def read_hashed(f: BinaryIO) -> tuple[bytes, str]:
    """The whole file, read once into memory, and the sha256 of exactly those bytes.

    One ``read`` into one ``bytes`` (the kernel fills fresh pages as it copies): measured faster
    than chunks into a preallocated ``bytearray``, a prefaulted or a huge-page mapping."""
    data = f.read()
    return data, hashlib.sha256(data).hexdigest()


def hash_file(f: BinaryIO) -> str:
    """The sha256 of what is left in ``f``."""
    digest = hashlib.sha256()
    for chunk in iter(lambda: f.read(_CHUNK), b""):
        digest.update(chunk)
    return digest.hexdigest()


def check_sha256(version: str, actual: str, recorded: str) -> None:
    """:class:`CorruptVersionError` unless the artefact's sha256 is the one recorded."""
    if not hmac.compare_digest(actual, recorded.lower()):
        raise CorruptVersionError(
            f"version {version}: artefact fails its sha256 check (recorded {recorded[:12]}…,"
            f" found {actual[:12]}…); refusing to load it"
        )


def load_artifact(
    storage: Storage,
    version: str,
    file: str,
    sha: str | None,
    artifact: Mapping[str, Any],
    allow: PickleAllowList | None = None,
    signed: str | None = None,
) -> Any:
    """Unpickle a version's artefact, after checking its sha256 (when recorded) and the sha256 its
    trusted signature lists (``signed``, when signatures are required) on the bytes that are
    unpickled. ``artifact`` is the version's ``artifact`` metadata (for the version warning).
    With an ``allow`` list the bytes are read once, hashed, scanned and unpickled from memory."""
    with _reading(version, file):
        with storage.open_artifact(version, file) as f:
            if allow is None and sha is None and signed is None:  # nothing to check: from the file
                return _unpickle(version, artifact, f)
            if allow is None and storage.private_artifacts:
                _check_digests(version, hash_file(f), sha, signed)
                f.seek(0)
                return _unpickle(version, artifact, f)
            data, actual = read_hashed(f)
        _check_digests(version, actual, sha, signed)
        return _unpickle(version, artifact, data, allow)


def _check_digests(version: str, actual: str, sha: str | None, signed: str | None) -> None:
    """The recorded sha256 first, then the signed one: both must be the bytes' own."""
    if sha is not None:
        check_sha256(version, actual, sha)
    if signed is not None and not hmac.compare_digest(actual, signed.lower()):
        raise UntrustedArtefactError(
            version,
            f"its bytes are not the bytes that were signed (signed {signed[:12]}…, found {actual[:12]}…)",
        )


def verify_artifact(storage: Storage, version: str, file: str, sha: str | None) -> None:
    """Hash the artefact against its recorded sha256 (when there is one); never unpickles."""
    with _reading(version, file), storage.open_artifact(version, file) as f:
        if sha is not None:
            check_sha256(version, hash_file(f), sha)


@contextlib.contextmanager
def _reading(version: str, file: str) -> Iterator[None]:
    """Turns what can go wrong while reading an artefact into the registry's errors."""
    try:
        yield
    except FileNotFoundError:
        raise CorruptVersionError(f"version {version}: artefact {file} is missing") from None
    except (CorruptVersionError, StorageUnavailableError):  # the latter: retried, not remembered
        raise
    except OSError as exc:  # a FIFO, a folder, no permission
        reason = exc.strerror or type(exc).__name__
        raise CorruptVersionError(f"version {version}: artefact {file} cannot be read ({reason})") from None
    except Exception as exc:  # unpickling runs any code: it may raise anything
        raise CorruptVersionError(
            f"version {version}: artefact {file} failed to load ({type(exc).__name__}: {exc})"
        ) from exc


def _unpickle(
    version: str, artifact: Mapping[str, Any], source: Any, allow: PickleAllowList | None = None
) -> Any:
    """Unpickle ``source``, a binary file or bytes (which ``allow``, if any, scans first)."""
    _warn_if_made_elsewhere(version, artifact)
    if allow is not None:
        return allow.loads(version, source)
    if isinstance(source, bytes):
        return cloudpickle.loads(source)
    return cloudpickle.load(source)


def _release(value: object, parts: int) -> tuple[str, ...] | None:
    """The first ``parts`` numbers of a version string (``"3.11.4"``, 2: ``("3", "11")``)."""
    return tuple(value.split(".")[:parts]) if isinstance(value, str) else None


def _warn_if_made_elsewhere(version: str, artifact: Mapping[str, Any]) -> None:
    """One warning when the artefact was written by another cloudpickle major or Python minor."""
    saved_cp, saved_py = artifact.get("cloudpickle_version"), artifact.get("python_version")
    running_cp, running_py = cloudpickle.__version__, platform.python_version()
    cp_differs = saved_cp is not None and _release(saved_cp, 1) != _release(running_cp, 1)
    py_differs = saved_py is not None and _release(saved_py, 2) != _release(running_py, 2)
    if cp_differs or py_differs:
        log.warning(
            "version %s was saved with cloudpickle %s and Python %s; this process runs cloudpickle %s"
            " and Python %s: loading it anyway (its sha256 is checked as always), but it may fail"
            " or behave differently",
            version,
            saved_cp if saved_cp is not None else "(not recorded)",
            saved_py if saved_py is not None else "(not recorded)",
            running_cp,
            running_py,
        )
