"""Signed versions: an OpenSSF model-signing bundle in ``versions/<v>/model.sig``, checked before unpickling.

The format is ``model-signing``'s own (a Sigstore bundle whose DSSE envelope holds an in-toto
statement listing each signed file with its sha256; ``metadata.json`` and ``model.sig`` are recorded
as ignored paths), built and checked with that package, so its command line verifies what is signed
here and the other way round. Checking a bundle never reads the artefact: the statement lists the
artefact's sha256, which the load computes anyway on the very bytes it unpickles (one pass).
``model-signing`` is imported on first use: importing it takes about half a second, which an app
that never meets a signature should not pay at start-up.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pathlib
import threading
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any, NamedTuple

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .errors import CorruptVersionError, InvalidKeyError, StorageUnavailableError, UntrustedArtefactError
from .loading import artifact_of, hash_file
from .snapshot import Entry
from .storage import Stamp, Storage
from .storage.base import METADATA_FILE, SIGNATURE_FILE

#: What a version's ``signature.status`` may be.
STATUSES = ("verified", "unsigned", "invalid", "untrusted")
#: The paths every statement made here records as ignored: they are not part of what is signed.
IGNORED_PATHS = (METADATA_FILE, SIGNATURE_FILE)
#: The curves model-signing supports for key-based signatures.
CURVES = frozenset({"secp256r1", "secp384r1", "secp521r1"})


class TrustedKey(NamedTuple):
    """A public key whose signatures are trusted, with the names it goes by."""

    public_key: ec.EllipticCurvePublicKey
    #: sha256 of the DER SubjectPublicKeyInfo, lowercase hex (``openssl pkey -pubin -outform DER``).
    fingerprint: str
    #: sha256 of the PEM SubjectPublicKeyInfo: the hint model-signing writes into its bundles.
    hint: str


class Checked(NamedTuple):
    """What a version's ``model.sig`` says, without the artefact read."""

    status: str
    key: str | None
    #: Why it is not ``verified`` (None when it is).
    reason: str | None = None
    #: The signed statement's files and their sha256 (when verified).
    files: Mapping[str, str] | None = None

    def answer(self) -> dict[str, str | None]:
        """The ``{"status", "key"}`` object each version's JSON carries."""
        return {"status": self.status, "key": self.key}


def fingerprint(public_key: ec.EllipticCurvePublicKey) -> str:
    """The key's fingerprint: sha256 of its DER SubjectPublicKeyInfo, lowercase hex."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def _trusted(public_key: object, where: str) -> TrustedKey:
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name not in CURVES:
        raise InvalidKeyError(
            f"trusted key {where} is not an elliptic-curve (P-256, P-384, P-521) public key"
        )
    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return TrustedKey(public_key, fingerprint(public_key), hashlib.sha256(pem).hexdigest())


def key_items(items: str | Iterable[str | os.PathLike[str]]) -> list[str]:
    """Key sources from a list, or from one string: a PEM, else comma-separated paths."""
    if isinstance(items, str):
        if "-----BEGIN" in items:
            return [items]
        return [item.strip() for item in items.split(",") if item.strip()]
    return [os.fspath(item) for item in items]


def load_trusted_keys(items: str | Iterable[str | os.PathLike[str]] | None) -> tuple[TrustedKey, ...]:
    """Public keys from PEM file paths, PEM strings and folders (their ``*.pub`` files); ValueError
    naming the item that cannot be read or is not an elliptic-curve public key."""
    keys: list[TrustedKey] = []
    for item in key_items(items or ()):
        if "-----BEGIN" in item:
            sources = [(item.encode("utf-8"), "given as PEM text")]
        elif os.path.isdir(item):
            names = sorted(name for name in os.listdir(item) if name.endswith(".pub"))
            sources = [(_read_key_file(os.path.join(item, name)), os.path.join(item, name)) for name in names]
        else:
            sources = [(_read_key_file(item), item)]
        for pem, where in sources:
            try:
                public_key = serialization.load_pem_public_key(pem)
            except (ValueError, TypeError):
                raise InvalidKeyError(f"trusted key {where} is not a PEM public key") from None
            keys.append(_trusted(public_key, where))
    return tuple({key.fingerprint: key for key in keys}.values())


def _read_key_file(path: str, what: str = "trusted key") -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(1 << 16)
    except OSError as exc:
        raise InvalidKeyError(
            f"{what} {path} cannot be read ({exc.strerror or type(exc).__name__})"
        ) from None


def load_signing_key(path: str | os.PathLike[str]) -> ec.EllipticCurvePrivateKey:
    """An elliptic-curve PEM private key that model-signing can sign with; ValueError saying why not."""
    where = os.fspath(path)
    pem = _read_key_file(where, "signing key")
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise InvalidKeyError(f"signing key {where} is not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name not in CURVES:
        raise InvalidKeyError(
            f"signing key {where} is not an elliptic-curve (P-256, P-384, P-521) private key"
        )
    return key


@functools.cache
def _model_signing() -> SimpleNamespace:
    """model-signing's modules, and its key signer and verifier over keys already loaded (and
    checked), imported on first use."""
    from model_signing import manifest
    from model_signing._hashing import hashing
    from model_signing._signing import sign_ec_key, sign_sigstore_pb, signing

    class KeySigner(sign_ec_key.Signer):
        def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
            self._private_key = private_key

    class KeyVerifier(sign_ec_key.Verifier):
        def __init__(self, public_key: ec.EllipticCurvePublicKey) -> None:
            self._public_key = public_key

    return SimpleNamespace(
        manifest=manifest,
        hashing=hashing,
        bundle=sign_sigstore_pb,
        signing=signing,
        KeySigner=KeySigner,
        KeyVerifier=KeyVerifier,
    )


def sign_files(private_key: ec.EllipticCurvePrivateKey, name: str, files: Mapping[str, str]) -> bytes:
    """A ``model.sig`` over ``files`` (name: sha256 hex) of the model folder ``name``: what
    ``model_signing sign key`` writes for that folder with ``metadata.json`` ignored."""
    ms = _model_signing()
    serialization_type = ms.manifest._FileSerialization(
        "sha256", allow_symlinks=False, ignore_paths=IGNORED_PATHS
    )
    items = [
        ms.manifest.FileManifestItem(
            path=pathlib.PurePosixPath(file), digest=ms.hashing.Digest("sha256", bytes.fromhex(sha))
        )
        for file, sha in files.items()
    ]
    payload = ms.signing.Payload(ms.manifest.Manifest(name, items, serialization_type))
    signature = ms.KeySigner(private_key).sign(payload)
    return signature.bundle.to_json().encode("utf-8")


def _parse(data: bytes) -> Any:
    """The bundle in ``model.sig``, as model-signing reads it (without checking any signature)."""
    text = data.decode("utf-8")

    class _Source:  # model-signing reads bundles from paths only
        def read_text(self, encoding: str = "utf-8") -> str:
            return text

    signature = _model_signing().bundle.Signature.read(_Source())
    if signature.bundle.dsse_envelope is None:
        raise ValueError("no DSSE envelope")
    return signature


def _statement(signature: Any) -> Any:
    """The manifest of the bundle's statement, unverified: whether the bundle is well formed."""
    envelope, ms = signature.bundle.dsse_envelope, _model_signing()
    if envelope.payload_type != ms.signing._IN_TOTO_JSON_PAYLOAD_TYPE:
        raise ValueError(f"payload type {envelope.payload_type!r}")
    return ms.signing.dsse_payload_to_manifest(json.loads(envelope.payload))


def check_signature(data: bytes | None, keys: Iterable[TrustedKey], file: str, sha: str | None) -> Checked:
    """What ``model.sig`` (``data``; None: there is none) says of a version whose artefact is
    ``file`` with recorded sha256 ``sha``, against the trusted ``keys``."""
    if data is None:
        return Checked("unsigned", None, "it has no model.sig")
    try:
        signature = _parse(data)
        _statement(signature)
    except Exception as exc:  # garbage, truncated, another format: anything can fail in a parser
        return Checked(
            "invalid",
            None,
            f"model.sig is not a model-signing bundle ({type(exc).__name__}: {str(exc)[:80]})",
        )
    named_key = signature.bundle.verification_material.public_key
    hint = named_key.hint if named_key else None
    keys = tuple(keys)
    named = [key for key in keys if key.hint == hint] if hint else list(keys)
    for key in named:
        try:
            statement = _model_signing().KeyVerifier(key.public_key).verify(signature)
        except Exception:  # InvalidSignature, a payload altered after signing
            continue
        return _check_files(statement, key.fingerprint, file, sha)
    if hint and named:
        return Checked(
            "invalid",
            None,
            "the signature does not verify with the trusted key it names (altered after signing)",
        )
    return Checked("untrusted", None, "it is signed by a key that is not trusted")


def _check_files(statement: Any, key: str, file: str, sha: str | None) -> Checked:
    files: dict[str, str] = {}
    for descriptor in statement.resource_descriptors():
        if descriptor.digest.algorithm != "sha256":
            return Checked(
                "invalid", key, f"the signed statement uses {descriptor.digest.algorithm}, not sha256"
            )
        files[descriptor.identifier] = descriptor.digest.digest_hex
    extra, missing = sorted(set(files) - {file}), file not in files
    if missing:
        return Checked("invalid", key, f"the signed statement does not list the artefact {file}")
    if extra:
        return Checked(
            "invalid", key, "the signed statement lists files the version does not have: " + ", ".join(extra)
        )
    if sha is not None and files[file] != sha.lower():
        return Checked(
            "invalid", key, "the signature is over other bytes than the artefact recorded in metadata.json"
        )
    return Checked("verified", key, None, files)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Signatures:
    """A registry's signing and trust settings, and its versions' signature status, cached per
    version stamp (on local disk, metadata.json's and model.sig's; on object storage, the
    metadata's: signing through the registry records the signature there too)."""

    def __init__(
        self,
        storage: Storage,
        signing_key: str | os.PathLike[str] | None = None,
        trusted_keys: str | Iterable[str | os.PathLike[str]] | None = None,
        require_signature: bool | None = None,
    ) -> None:
        self.storage = storage
        self.signing_key = signing_key
        if signing_key is not None:
            load_signing_key(signing_key)
        sources = key_items(trusted_keys or ())
        self.trusted = load_trusted_keys(sources)
        # Keys given that hold none (a folder without *.pub files, an unmounted volume) fail closed.
        self.required = bool(sources) if require_signature is None else bool(require_signature)
        if self.required and not self.trusted:
            found = f" (the {len(sources)} source(s) given hold no *.pub key)" if sources else ""
            raise ValueError(f"require_signature is on but no trusted keys are given{found}")
        self._status: dict[str, tuple[Stamp, Checked]] = {}
        self._lock = threading.Lock()

    def signer(self, signing_key: str | os.PathLike[str] | None) -> ec.EllipticCurvePrivateKey | None:
        """The key a save signs with (``signing_key``, else the registry's), loaded before anything is
        written: a key that cannot sign publishes nothing."""
        path = signing_key if signing_key is not None else self.signing_key
        return load_signing_key(path) if path is not None else None

    def check(self, version: str, file: str, sha: str | None) -> Checked:
        """Read the version's ``model.sig`` now and check it (the artefact is not read)."""
        try:
            data: bytes | None = self.storage.read_signature(version)
        except FileNotFoundError:
            data = None
        except (StorageUnavailableError, ConnectionError, TimeoutError):
            raise
        except OSError as exc:  # not a regular file, a link out of the root, no permission
            return Checked(
                "invalid", None, f"model.sig cannot be read ({exc.strerror or type(exc).__name__})"
            )
        return check_signature(data, self.trusted, file, sha)

    def status(self, entry: Entry) -> dict[str, str | None]:
        """``{"status", "key"}`` of a version, without loading it; cached while its metadata stays."""
        with self._lock:
            cached = self._status.get(entry.version)
        if cached is not None and cached[0] == entry.stamp:
            return cached[1].answer()
        try:
            file, sha, _ = artifact_of(entry.version, entry.metadata or {})
        except CorruptVersionError:
            file, sha = "", None
        checked = self.check(entry.version, file, sha)
        with self._lock:
            self._status[entry.version] = (entry.stamp, checked)
        return checked.answer()

    def signed_digest(self, version: str, file: str, sha: str | None) -> str | None:
        """Before a load: the sha256 that a trusted signature lists for the artefact, which the bytes
        about to be unpickled must have; None when signatures are not required. Otherwise
        :class:`UntrustedArtefactError` saying why."""
        if not self.required:
            return None
        checked = self.check(version, file, sha)
        if checked.status != "verified" or checked.files is None:
            raise UntrustedArtefactError(version, f"{checked.reason} (signature {checked.status})")
        return checked.files[file]

    def sign_version(
        self, version: str, metadata: Mapping[str, Any], signing_key: str | os.PathLike[str]
    ) -> dict[str, Any]:
        """Write ``model.sig`` for a committed version, its artefact hashed anew (and refused if it
        fails its recorded sha256); returns the record for the metadata's ``artifact.signature``."""
        key = load_signing_key(signing_key)
        file, sha, _ = artifact_of(version, metadata)
        actual = self._hash(version, file)
        if sha is not None and actual != sha.lower():
            raise CorruptVersionError(
                f"version {version}: artefact fails its sha256 check; refusing to sign it"
            )
        self.storage.write_signature(version, sign_files(key, version, {file: actual}))
        return signature_record(key)

    def check_verified(self, version: str, metadata: Mapping[str, Any]) -> Checked:
        """A fresh check of ``model.sig`` against the artefact's bytes, for ``flask models verify``
        (after :meth:`ModelRegistry.verify` checked them against the recorded sha256, if any)."""
        file, sha, _ = artifact_of(version, metadata)
        checked = self.check(version, file, sha)
        if checked.files is not None and sha is None and self._hash(version, file) != checked.files[file]:
            return Checked("invalid", checked.key, "the artefact's bytes are not the bytes that were signed")
        return checked

    def failed(self, checked: Checked) -> bool:
        """Whether a version with this signature fails verification: an invalid signature, or any
        but a verified one while signatures are required."""
        return checked.status == "invalid" or (self.required and checked.status != "verified")

    def _hash(self, version: str, file: str) -> str:
        try:
            with self.storage.open_artifact(version, file) as f:
                return hash_file(f)
        except FileNotFoundError:
            raise CorruptVersionError(f"version {version}: artefact {file} is missing") from None


def signature_record(key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    """What ``metadata.json`` records of a signature: its file, the key's fingerprint, and when."""
    return {"file": SIGNATURE_FILE, "key": fingerprint(key.public_key()), "signed_at": _now()}
