"""Signed versions (SPEC "Trusted artefacts"): model.sig written in the publish, checked before unpickling,
interoperable both ways with the real ``model-signing`` package (its CLI and its Python API)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import cloudpickle
import model_signing
import pytest
import servers
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from flask_model_registry import ModelRegistry, loading
from flask_model_registry.errors import CorruptVersionError, UntrustedArtefactError
from flask_model_registry.signing import sign_files

CLI = [sys.executable, "-m", "model_signing"]


class KeyPair(NamedTuple):
    private: Path
    public: Path
    #: sha256 of the DER SubjectPublicKeyInfo, as ``openssl pkey -pubin -outform DER | sha256sum``.
    fingerprint: str


def make_key(folder: Path, name: str, curve: ec.EllipticCurve | None = None) -> KeyPair:
    """A fresh elliptic-curve key pair as PEM files ``<name>.priv`` / ``<name>.pub`` in ``folder``."""
    key = ec.generate_private_key(curve or ec.SECP256R1())
    private = folder / f"{name}.priv"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    public = folder / f"{name}.pub"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return KeyPair(private, public, hashlib.sha256(der).hexdigest())


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, KeyPair]:
    """A trusted key pair and another one nobody trusts."""
    folder = tmp_path / "keys"
    folder.mkdir()
    return {"trusted": make_key(folder, "trusted"), "other": make_key(folder, "other")}


@pytest.fixture
def signed(registry_root: Path, keys: dict[str, KeyPair]) -> ModelRegistry:
    """A registry that signs every save with the trusted key and requires that key's signatures."""
    return ModelRegistry(
        registry_root, signing_key=keys["trusted"].private, trusted_keys=[keys["trusted"].public]
    )


def _touch(path: str) -> str:
    Path(path).touch()
    return "a model whose loading ran code"


class Marker:
    """A model whose unpickling leaves a file: the proof that it was (or was not) unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Callable[[str], str], tuple[str]]:
        return (_touch, (self.path,))


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    """Where a :class:`Marker` leaves its file (absent until one is unpickled)."""
    return tmp_path / "unpickled"


def version_dir(root: Path, version: str) -> Path:
    return root / "versions" / version


def test_signed_save_verifies_and_loads(
    signed: ModelRegistry, registry_root: Path, keys: dict[str, KeyPair]
) -> None:
    meta = signed.save_model("1.0.0", {"w": 1})
    assert (version_dir(registry_root, "1.0.0") / "model.sig").is_file()
    assert meta["artifact"]["signature"]["key"] == keys["trusted"].fingerprint
    assert signed.signature("1.0.0") == {"status": "verified", "key": keys["trusted"].fingerprint}
    assert signed.get_model("1.0.0") == {"w": 1}
    assert signed.get_latest_model() == {"w": 1}
    # without trusted keys the same signature is well formed but trusted by nobody
    assert ModelRegistry(registry_root).signature("1.0.0") == {"status": "untrusted", "key": None}


def test_fingerprint_is_the_der_sha256_openssl_prints(
    signed: ModelRegistry, keys: dict[str, KeyPair]
) -> None:
    signed.save_model("1.0.0", {"w": 1})
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-in", str(keys["trusted"].public), "-outform", "DER"],
        capture_output=True,
        check=True,
    ).stdout
    assert signed.signature("1.0.0")["key"] == hashlib.sha256(der).hexdigest()


@pytest.mark.parametrize("curve", [ec.SECP384R1(), ec.SECP521R1()], ids=["P-384", "P-521"])
def test_other_curves_sign_and_verify(registry_root: Path, tmp_path: Path, curve: ec.EllipticCurve) -> None:
    pair = make_key(tmp_path, "k", curve)
    registry = ModelRegistry(registry_root, signing_key=pair.private, trusted_keys=[pair.public])
    registry.save_model("1.0.0", [1])
    assert registry.signature("1.0.0") == {"status": "verified", "key": pair.fingerprint}
    assert registry.get_model("1.0.0") == [1]


def write_rsa(path: Path, private: bool) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if private:
        data = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    else:
        data = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("bad", ["missing", "public", "rsa", "garbage"])
def test_a_key_that_cannot_sign_publishes_nothing(
    registry: ModelRegistry, registry_root: Path, keys: dict[str, KeyPair], tmp_path: Path, bad: str
) -> None:
    key = {
        "missing": tmp_path / "nope.priv",
        "public": keys["trusted"].public,
        "rsa": write_rsa(tmp_path / "rsa.priv", private=True),
        "garbage": tmp_path / "garbage.priv",
    }[bad]
    if bad == "garbage":
        key.write_text("not a key")
    with pytest.raises(ValueError, match="signing key"):
        registry.save_model("1.0.0", {"w": 1}, signing_key=key)
    assert registry.list_versions() == []
    assert not (registry_root / "versions").exists()  # refused before anything was staged
    with pytest.raises(ValueError, match="signing key"):
        ModelRegistry(registry_root, signing_key=key)


def test_require_signature_needs_readable_ec_trusted_keys(
    registry_root: Path, keys: dict[str, KeyPair], tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="no trusted keys"):
        ModelRegistry(registry_root, require_signature=True)
    with pytest.raises(ValueError, match="cannot be read"):
        ModelRegistry(registry_root, trusted_keys=[tmp_path / "missing.pub"])
    with pytest.raises(ValueError, match="not an elliptic-curve"):
        ModelRegistry(registry_root, trusted_keys=[write_rsa(tmp_path / "rsa.pub", private=False)])
    with pytest.raises(ValueError, match="not a PEM public key"):
        ModelRegistry(registry_root, trusted_keys=[keys["trusted"].private])
    assert not ModelRegistry(registry_root).signatures.required
    assert not ModelRegistry(
        registry_root, trusted_keys=[keys["trusted"].public], require_signature=False
    ).signatures.required


def test_trusted_keys_that_hold_no_key_fail_closed(registry_root: Path, tmp_path: Path) -> None:
    empty = tmp_path / "keys"  # a folder without *.pub files: an unmounted volume, a typo
    empty.mkdir()
    (empty / "README").write_text("not a key")
    with pytest.raises(ValueError, match="no trusted keys"):
        ModelRegistry(registry_root, trusted_keys=[empty])
    with pytest.raises(ValueError, match="no trusted keys"):
        ModelRegistry(registry_root, trusted_keys=str(empty))
    assert not ModelRegistry(registry_root, trusted_keys=[empty], require_signature=False).signatures.required
    assert not ModelRegistry(registry_root, trusted_keys=[]).signatures.required  # none given


def test_trusted_keys_from_paths_pem_text_folders_and_a_comma_separated_string(
    registry_root: Path, keys: dict[str, KeyPair], tmp_path: Path
) -> None:
    trusted, other = keys["trusted"], keys["other"]
    folder = tmp_path / "pubs"
    folder.mkdir()
    (folder / "a.pub").write_bytes(other.public.read_bytes())
    (folder / "notes.txt").write_text("ignored: not a .pub file")
    forms: list[Any] = [
        [str(trusted.public), str(other.public)],
        f"{trusted.public}, {other.public}",
        [trusted.public.read_text(), folder],
        [Path(trusted.public)],
    ]
    for form in forms:
        registry = ModelRegistry(registry_root, trusted_keys=form)
        assert registry.signatures.required
        fingerprints = {key.fingerprint for key in registry.signatures.trusted}
        assert trusted.fingerprint in fingerprints
    assert {
        k.fingerprint for k in ModelRegistry(registry_root, trusted_keys=[folder]).signatures.trusted
    } == {other.fingerprint}


def statement_of(sig: Path) -> dict[str, Any]:
    bundle = json.loads(sig.read_text())
    return json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))


def resign(sig: Path, key: KeyPair, version: str, files: dict[str, str]) -> None:
    """Replace ``sig`` with a signature by ``key`` over ``files`` (name: sha256)."""
    private = serialization.load_pem_private_key(key.private.read_bytes(), None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    sig.write_bytes(sign_files(private, version, files))


def sha_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tamper(case: str, folder: Path, keys: dict[str, KeyPair]) -> None:
    """Make one of the ways a version's signature must be refused."""
    sig, pkl = folder / "model.sig", folder / "model.pkl"
    if case == "unsigned":
        sig.unlink()
    elif case == "unknown key":
        resign(sig, keys["other"], "1.0.0", {"model.pkl": sha_of(pkl)})
    elif case == "garbage":
        sig.write_bytes(os.urandom(300))
    elif case == "truncated":
        sig.write_bytes(sig.read_bytes()[:200])
    elif case == "over other bytes":
        resign(sig, keys["trusted"], "1.0.0", {"model.pkl": hashlib.sha256(b"other bytes").hexdigest()})
    elif case == "altered statement":  # the payload edited after signing, the signature kept
        bundle = json.loads(sig.read_text())
        statement = statement_of(sig)
        forged = hashlib.sha256(cloudpickle.dumps("forged")).digest()
        statement["predicate"]["resources"][0]["digest"] = forged.hex()
        statement["subject"][0]["digest"]["sha256"] = hashlib.sha256(forged).hexdigest()  # consistent
        bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
        sig.write_text(json.dumps(bundle))
    elif case == "extra file":
        resign(sig, keys["trusted"], "1.0.0", {"model.pkl": sha_of(pkl), "extra.bin": "ab" * 32})
    elif case == "missing file":
        resign(sig, keys["trusted"], "1.0.0", {"weights.bin": sha_of(pkl)})
    else:
        raise AssertionError(case)


REFUSALS = {
    "unsigned": ("unsigned", "has no model"),
    "unknown key": ("untrusted", "not trusted"),
    "garbage": ("invalid", "not a model-signing bundle"),
    "truncated": ("invalid", "not a model-signing bundle"),
    "over other bytes": ("invalid", "over other bytes"),
    "altered statement": ("invalid", "does not verify"),
    "extra file": ("invalid", "lists files the version does not have: extra"),
    "missing file": ("invalid", "does not list the artefact model"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refused_signatures_unpickle_nothing(
    registry_root: Path, keys: dict[str, KeyPair], marker: Path, case: str
) -> None:
    writer = ModelRegistry(registry_root, signing_key=keys["trusted"].private)
    writer.save_model("1.0.0", Marker(marker))
    tamper(case, version_dir(registry_root, "1.0.0"), keys)
    reader = ModelRegistry(registry_root, trusted_keys=[keys["trusted"].public])
    status, why = REFUSALS[case]
    assert reader.signature("1.0.0")["status"] == status
    with pytest.raises(UntrustedArtefactError, match=why) as raised:
        reader.get_model("1.0.0")
    assert isinstance(raised.value, CorruptVersionError)
    with pytest.raises(UntrustedArtefactError):
        reader.get_latest_model()
    assert not marker.exists()
    # without required signatures the same artefact loads: the marker proves the test can fail
    assert ModelRegistry(registry_root).get_model("1.0.0") == "a model whose loading ran code"
    assert marker.exists()


def test_an_untrusted_artefact_error_survives_pickling() -> None:
    error = UntrustedArtefactError("1.0.0", "it has no model.sig")  # as a process pool passes it on
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is UntrustedArtefactError and str(copy) == str(error)
    assert (copy.version, copy.reason) == ("1.0.0", "it has no model.sig")


def test_bytes_changed_after_signing_are_refused(
    registry_root: Path, keys: dict[str, KeyPair], marker: Path, by_hand: Callable[..., Path]
) -> None:
    # a hand-made version records no sha256: only the signed digest stands between it and the load
    folder = by_hand("1.0.0", {"owner": "ml"}, "the signed model")
    resign(folder / "model.sig", keys["trusted"], "1.0.0", {"model.pkl": sha_of(folder / "model.pkl")})
    reader = ModelRegistry(registry_root, trusted_keys=[keys["trusted"].public])
    assert reader.signature("1.0.0")["status"] == "verified"
    (folder / "model.pkl").write_bytes(cloudpickle.dumps(Marker(marker)))
    with pytest.raises(UntrustedArtefactError, match="not the bytes that were signed"):
        reader.get_model("1.0.0")
    assert not marker.exists()
    # a version that records its sha256 is refused by that check first
    signer = ModelRegistry(registry_root, signing_key=keys["trusted"].private)
    signer.save_model("2.0.0", "the signed model")
    (version_dir(registry_root, "2.0.0") / "model.pkl").write_bytes(cloudpickle.dumps(Marker(marker)))
    with pytest.raises(CorruptVersionError, match="sha256"):
        reader.get_model("2.0.0")
    assert not marker.exists()


def test_bytes_swapped_right_after_the_check_are_never_unpickled(
    signed: ModelRegistry, registry_root: Path, marker: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    signed.save_model("1.0.0", {"w": "signed"})
    pkl = version_dir(registry_root, "1.0.0") / "model.pkl"
    evil = cloudpickle.dumps(Marker(marker))
    real = loading.read_hashed
    swapped = threading.Event()

    def read_then_swap(f: Any) -> tuple[bytes, str]:
        data, sha = real(f)
        pkl.write_bytes(evil)  # the attacker wins every race: right after the read and the hash
        swapped.set()
        return data, sha

    monkeypatch.setattr(loading, "read_hashed", read_then_swap)
    assert signed.get_model("1.0.0") == {"w": "signed"}
    assert swapped.is_set() and pkl.read_bytes() == evil
    assert not marker.exists()


def test_existing_fallbacks_hold(
    signed: ModelRegistry, registry_root: Path, keys: dict[str, KeyPair]
) -> None:
    signed.save_model("1.0.0", "good", {"stage": "prod"})
    assert signed.get_latest_model("prod") == "good"
    assert signed.route("user-1", "prod").version == "1.0.0"
    ModelRegistry(registry_root).save_model("1.1.0", "unsigned", {"stage": "prod"})
    assert signed.get_latest_model("prod") == "good"  # the previous model keeps serving
    assert signed.get_latest("prod").version == "1.0.0"
    assert isinstance(signed.load_failure("1.1.0"), UntrustedArtefactError)
    ModelRegistry(registry_root).save_model("1.2.0", "canary", {"stage": "prod", "canary": True})
    # the canary is unsigned: route falls back to the stable version for every key
    assert {signed.route(f"user-{i}", "prod").model for i in range(40)} == {"good"}


def test_sign_an_existing_version(registry_root: Path, keys: dict[str, KeyPair]) -> None:
    writer = ModelRegistry(registry_root)
    writer.save_model("1.0.0", "model")
    reader = ModelRegistry(registry_root, trusted_keys=[keys["trusted"].public])
    with pytest.raises(UntrustedArtefactError):
        reader.get_model("1.0.0")
    assert reader.signature("1.0.0")["status"] == "unsigned"
    meta = writer.sign("1.0.0", keys["trusted"].private, actor="release-bot")
    assert meta["artifact"]["signature"]["key"] == keys["trusted"].fingerprint
    event = writer.history("1.0.0")[-1]
    assert (event["action"], event["actor"]) == ("sign", "release-bot")
    assert "signature" in event["after"]["artifact"] and "signature" not in event["before"]["artifact"]
    # another process sees it, and forgets the failure it remembered
    assert reader.signature("1.0.0") == {"status": "verified", "key": keys["trusted"].fingerprint}
    assert reader.load_failure("1.0.0") is None
    assert reader.get_model("1.0.0") == "model"
    # re-signing with another key replaces model.sig
    writer.sign("1.0.0", keys["other"].private)
    assert reader.signature("1.0.0")["status"] == "untrusted"


def test_sign_takes_the_actor_by_position(registry_root: Path, keys: dict[str, KeyPair]) -> None:
    registry = ModelRegistry(registry_root)
    registry.save_model("1.0.0", "model")
    registry.sign("1.0.0", keys["trusted"].private, "release-bot")  # sign(version, signing_key, actor=None)
    assert registry.history("1.0.0")[-1]["actor"] == "release-bot"


def test_sign_refuses_an_artefact_failing_its_sha256(
    registry: ModelRegistry, registry_root: Path, keys: dict[str, KeyPair]
) -> None:
    registry.save_model("1.0.0", "model")
    (version_dir(registry_root, "1.0.0") / "model.pkl").write_bytes(cloudpickle.dumps("swapped"))
    with pytest.raises(CorruptVersionError, match="sha256"):
        registry.sign("1.0.0", keys["trusted"].private)
    assert not (version_dir(registry_root, "1.0.0") / "model.sig").exists()
    assert [e["action"] for e in registry.history("1.0.0")] == ["publish"]


def cli_sign(folder: Path, key: KeyPair) -> None:
    """Sign a version folder with model-signing's own command line, metadata.json ignored."""
    signed = subprocess.run(
        [
            *CLI,
            "sign",
            "key",
            str(folder),
            "--private_key",
            str(key.private),
            "--signature",
            str(folder / "model.sig"),
            "--ignore-paths",
            str(folder / "metadata.json"),
        ],
        capture_output=True,
        text=True,
    )
    assert signed.returncode == 0, signed.stdout + signed.stderr


def test_model_signing_cli_verifies_what_we_sign(
    signed: ModelRegistry, registry_root: Path, keys: dict[str, KeyPair]
) -> None:
    signed.save_model("1.0.0", {"w": 1}, {"stage": "prod"})
    signed.set_stage("1.0.0", "staging")  # metadata changes after signing: it is not signed
    folder = version_dir(registry_root, "1.0.0")
    verify = [*CLI, "verify", "key", str(folder), "--signature", str(folder / "model.sig")]
    ok = subprocess.run(
        [
            *verify,
            "--public_key",
            str(keys["trusted"].public),
            "--ignore-paths",
            str(folder / "metadata.json"),
        ],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    wrong = subprocess.run(
        [*verify, "--public_key", str(keys["other"].public), "--ignore-paths", str(folder / "metadata.json")],
        capture_output=True,
        text=True,
    )
    assert wrong.returncode != 0
    # its Python API too
    model_signing.verifying.Config().use_elliptic_key_verifier(
        public_key=keys["trusted"].public
    ).set_hashing_config(_ignoring_ours(folder)).verify(folder, folder / "model.sig")
    (folder / "model.pkl").write_bytes(b"changed")
    with pytest.raises(ValueError):
        model_signing.verifying.Config().use_elliptic_key_verifier(public_key=keys["trusted"].public).verify(
            folder, folder / "model.sig"
        )


def _ignoring_ours(folder: Path) -> Any:
    """model-signing's hashing config leaving out the files the registry ignores, as the SPEC says."""
    return model_signing.hashing.Config().set_ignored_paths(
        paths=[folder / "metadata.json", folder / "model.sig"]
    )


def test_a_folder_signed_by_the_model_signing_cli_verifies_here(
    registry: ModelRegistry, registry_root: Path, keys: dict[str, KeyPair]
) -> None:
    registry.save_model("1.0.0", {"w": 1})
    folder = version_dir(registry_root, "1.0.0")
    cli_sign(folder, keys["trusted"])
    reader = ModelRegistry(registry_root, trusted_keys=[keys["trusted"].public])
    assert reader.signature("1.0.0") == {"status": "verified", "key": keys["trusted"].fingerprint}
    assert reader.get_model("1.0.0") == {"w": 1}


def test_a_folder_signed_by_the_model_signing_python_api_verifies_here(
    by_hand: Callable[..., Path], registry_root: Path, keys: dict[str, KeyPair]
) -> None:
    folder = by_hand("1.0.0", {"owner": "ml"}, "hand-made and signed")
    model_signing.signing.Config().use_elliptic_key_signer(
        private_key=keys["trusted"].private
    ).set_hashing_config(_ignoring_ours(folder)).sign(folder, folder / "model.sig")
    reader = ModelRegistry(registry_root, trusted_keys=[keys["trusted"].public])
    assert reader.signature("1.0.0")["status"] == "verified"
    assert reader.get_model("1.0.0") == "hand-made and signed"


def test_signed_publish_and_verify_on_object_storage(
    registry_target: servers.RegistryTarget, keys: dict[str, KeyPair], marker: Path
) -> None:
    writer = registry_target.open(signing_key=keys["trusted"].private)
    meta = writer.save_model("1.0.0", {"w": 1})
    fs = registry_target.filesystem
    assert fs.exists(registry_target.path("versions", "1.0.0", "model.sig"))
    reader = registry_target.open(trusted_keys=[keys["trusted"].public], refresh_interval=0)
    assert reader.signature("1.0.0") == {"status": "verified", "key": keys["trusted"].fingerprint}
    assert reader.get_model("1.0.0") == {"w": 1}
    # unsigned, then signed afterwards
    registry_target.open().save_model("1.1.0", Marker(marker))
    with pytest.raises(UntrustedArtefactError, match="no model"):
        reader.get_model("1.1.0")
    writer.sign("1.1.0", keys["other"].private)
    reader = registry_target.open(trusted_keys=[keys["trusted"].public], refresh_interval=0)
    with pytest.raises(UntrustedArtefactError, match="not trusted"):
        reader.get_model("1.1.0")
    assert not marker.exists()
    # the artefact rewritten after signing
    artefact = registry_target.path("versions", "1.0.0", meta["artifact"]["file"])
    fs.pipe_file(artefact, cloudpickle.dumps(Marker(marker)))
    reader = registry_target.open(trusted_keys=[keys["trusted"].public], refresh_interval=0)
    with pytest.raises(CorruptVersionError, match="sha256"):
        reader.get_model("1.0.0")
    assert not marker.exists()


def test_a_failed_signed_publish_leaves_nothing(
    registry_root: Path, keys: dict[str, KeyPair], monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = ModelRegistry(registry_root, signing_key=keys["trusted"].private)

    def fail(*args: Any) -> bytes:
        raise RuntimeError("signing failed")

    monkeypatch.setattr("flask_model_registry.registry.sign_files", fail)
    with pytest.raises(RuntimeError):
        registry.save_model("1.0.0", "model")
    assert registry.list_versions() == []
    assert list((registry_root / "versions").iterdir()) == []


@pytest.fixture
def app_config(keys: dict[str, KeyPair]) -> dict[str, Any]:
    """The ``app`` fixture trusts the trusted key (and so requires signatures)."""
    return {"MODEL_REGISTRY_TRUSTED_KEYS": [str(keys["trusted"].public)]}


@pytest.fixture
def mixed(registry_root: Path, keys: dict[str, KeyPair]) -> dict[str, str]:
    """1.0.0 signed by the trusted key, 1.1.0 unsigned, 1.2.0 by the other key, 1.3.0 garbage."""
    ModelRegistry(registry_root, signing_key=keys["trusted"].private).save_model("1.0.0", "a")
    ModelRegistry(registry_root).save_model("1.1.0", "b")
    ModelRegistry(registry_root, signing_key=keys["other"].private).save_model("1.2.0", "c")
    ModelRegistry(registry_root, signing_key=keys["trusted"].private).save_model("1.3.0", "d")
    (version_dir(registry_root, "1.3.0") / "model.sig").write_bytes(b"{ garbage")
    return {"1.0.0": "verified", "1.1.0": "unsigned", "1.2.0": "untrusted", "1.3.0": "invalid"}


def test_every_version_json_carries_its_signature(
    client: Any, app: Any, mixed: dict[str, str], keys: dict[str, KeyPair]
) -> None:
    listed = client.get("/models").get_json()
    assert {item["version"]: item["signature"]["status"] for item in listed} == mixed
    one = client.get("/models/1.0.0").get_json()
    assert one["signature"] == {"status": "verified", "key": keys["trusted"].fingerprint}
    assert client.get("/models/1.2.0").get_json()["signature"] == {"status": "untrusted", "key": None}
    assert client.get("/models/latest").get_json()["signature"]["status"] == "invalid"
    # the app refuses to load what is not verified
    with app.app_context():
        with pytest.raises(UntrustedArtefactError):
            app.registry.get_model("1.1.0")
        assert app.registry.get_model("1.0.0") == "a"


def test_patch_answers_with_the_signature_and_the_etag_of_the_next_get(
    client: Any, mixed: dict[str, str], auth_headers: dict[str, str]
) -> None:
    patched = client.patch("/models/1.0.0", json={"stage": "prod"}, headers=auth_headers)
    assert patched.status_code == 200 and patched.get_json()["signature"]["status"] == "verified"
    got = client.get("/models/1.0.0", headers=auth_headers)
    assert got.headers["ETag"] == patched.headers["ETag"]


def test_cli_list_has_a_signature_column_and_verify_fails_unless_verified(
    app: Any, mixed: dict[str, str], registry_root: Path
) -> None:
    runner = app.test_cli_runner()
    lines = runner.invoke(args=["models", "list"]).output.splitlines()
    assert lines[0].split() == ["VERSION", "STAGE", "CREATED", "SIGNATURE", "FLAGS"]
    assert {line.split()[0]: line.split()[3] for line in lines[1:]} == mixed
    result = runner.invoke(args=["models", "verify"])
    assert result.exit_code == 1
    report = {
        line.split()[1].rstrip(":"): line
        for line in result.output.splitlines()
        if line[:4] in ("ok  ", "FAIL")
    }
    assert report["1.0.0"].startswith("ok") and "signature verified" in report["1.0.0"]
    assert report["1.1.0"].startswith("FAIL") and "signature unsigned" in report["1.1.0"]
    assert report["1.2.0"].startswith("FAIL") and "not trusted" in report["1.2.0"]
    assert report["1.3.0"].startswith("FAIL") and "signature invalid" in report["1.3.0"]
    as_json = json.loads(runner.invoke(args=["models", "verify", "--json"]).output.split("\nError:")[0])
    assert [r["ok"] for r in as_json] == [True, False, False, False]
    assert runner.invoke(args=["models", "verify", "1.0.0"]).exit_code == 0
    one = runner.invoke(args=["models", "verify", "1.2.0"])
    assert one.exit_code == 1 and "FAIL  1.2.0" in one.output and "1.0.0" not in one.output
    missing = runner.invoke(args=["models", "verify", "9.9.9"])
    assert missing.exit_code == 1 and missing.output.startswith("Error: version 9.9.9 not found")


def test_cli_verify_without_required_signatures_fails_only_invalid_ones(
    registry_root: Path, mixed: dict[str, str], keys: dict[str, KeyPair]
) -> None:
    from flask import Flask

    from flask_model_registry import FlaskModelRegistry

    app = Flask("plain")
    app.config.update(
        MODEL_REGISTRY_ROOT=str(registry_root),
        MODEL_REGISTRY_TRUSTED_KEYS=str(keys["trusted"].public),
        MODEL_REGISTRY_REQUIRE_SIGNATURE="false",
    )
    FlaskModelRegistry(app)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["models", "verify"])
    assert result.exit_code == 1
    failed = [line.split()[1].rstrip(":") for line in result.output.splitlines() if line.startswith("FAIL")]
    assert failed == ["1.3.0"]
    (version_dir(registry_root, "1.3.0") / "model.sig").unlink()
    assert runner.invoke(args=["models", "verify"]).exit_code == 0
    # a signed hand-made version whose bytes changed after signing (no sha256 recorded to catch it)
    folder = version_dir(registry_root, "1.1.0")
    metadata = json.loads((folder / "metadata.json").read_text())
    del metadata["artifact"]["sha256"]
    (folder / "metadata.json").write_text(json.dumps(metadata))
    resign(folder / "model.sig", keys["trusted"], "1.1.0", {"model.pkl": sha_of(folder / "model.pkl")})
    (folder / "model.pkl").write_bytes(cloudpickle.dumps("changed"))
    result = runner.invoke(args=["models", "verify"])
    assert result.exit_code == 1 and "not the bytes that were signed" in result.output


def test_cli_sign_signs_an_existing_version(app: Any, registry_root: Path, keys: dict[str, KeyPair]) -> None:
    ModelRegistry(registry_root).save_model("1.0.0", "model")
    runner = app.test_cli_runner()
    result = runner.invoke(
        args=["models", "sign", "1.0.0", "--key", str(keys["trusted"].private), "--actor", "ci"]
    )
    assert result.exit_code == 0, result.output
    assert keys["trusted"].fingerprint in result.output
    with app.app_context():
        assert app.registry.signature("1.0.0")["status"] == "verified"
        assert app.registry.history("1.0.0")[-1]["action"] == "sign"
    bad = runner.invoke(args=["models", "sign", "1.0.0", "--key", str(keys["trusted"].public)])
    assert (
        bad.exit_code == 1 and bad.output.startswith("Error: signing key") and "Traceback" not in bad.output
    )


def test_the_console_shows_each_versions_signature_in_chromium(
    app: Any, mixed: dict[str, str], keys: dict[str, KeyPair], by_hand: Callable[..., Path]
) -> None:
    from browser import chromium, live_server, tab
    from playwright.sync_api import expect

    by_hand("1.4.0", raw=b'{"stage": ')  # a broken version still shows its signature
    with chromium() as browser, live_server(app) as base, tab(browser, base) as t:
        assert t.goto("/models/ui/") == 200
        table = t.page.locator("table.versions")
        for version, status in {**mixed, "1.4.0": "unsigned"}.items():
            row = table.locator("tr", has=t.page.get_by_role("link", name=version, exact=True))
            expect(row.locator("span.badge.sig")).to_have_text(status)
        verified = table.locator("tr", has=t.page.get_by_role("link", name="1.0.0", exact=True))
        assert keys["trusted"].fingerprint in (verified.locator("span.sig").get_attribute("title") or "")
        t.screenshot("ui-registry-signatures.png")
        assert t.goto("/models/ui/v/1.0.0") == 200
        facts = t.page.locator("dl.facts")
        expect(facts.locator("span.badge.sig")).to_have_text("verified")
        expect(facts).to_contain_text(keys["trusted"].fingerprint)
        assert t.goto("/models/ui/v/1.2.0") == 200
        expect(t.page.locator("dl.facts span.badge.sig")).to_have_text("untrusted")
        assert t.errors == [] and t.outside() == []


def test_a_refused_load_is_counted_and_health_stays_ok(
    app: Any, client: Any, registry_root: Path, keys: dict[str, KeyPair]
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    ModelRegistry(registry_root, signing_key=keys["trusted"].private).save_model(
        "1.0.0", "good", {"stage": "prod"}
    )
    with app.app_context():
        assert app.registry.route("k", "prod").version == "1.0.0"
    ModelRegistry(registry_root).save_model("1.1.0", "unsigned", {"stage": "prod"})

    def failures() -> float:
        text = client.get("/models/metrics").get_data(as_text=True)
        samples = [
            s
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "model_registry_model_load_failures_total" and s.labels.get("version") == "1.1.0"
        ]
        return sum(s.value for s in samples)

    before = failures()
    with app.app_context():
        assert app.registry.route("k", "prod").version == "1.0.0"  # 1.1.0 refused: stable serves
    assert failures() == before + 1
    assert client.get("/models/health").status_code == 200


def test_the_sample_registry_is_signed_with_the_demo_key_make_serve_trusts() -> None:
    from example_app import create_app

    repo = Path(__file__).resolve().parent.parent
    makefile = (repo / "Makefile").read_text()
    demo = next(
        line.split(":=")[1].strip() for line in makefile.splitlines() if line.startswith("DEMO_TRUSTED_KEY")
    )
    assert (
        "DEMO ONLY" in (repo / demo).read_text()
        and "NEVER" in (repo / "example_app/keys/demo-only.priv").read_text()
    )
    sample = ModelRegistry(repo / "registry", trusted_keys=[repo / demo])
    assert {v: sample.signature(v)["status"] for v in sample.list_versions()} == {
        "1.0.0": "verified",
        "1.1.0": "verified",
    }
    app = create_app(
        {"MODEL_REGISTRY_ROOT": str(repo / "registry"), "MODEL_REGISTRY_TRUSTED_KEYS": str(repo / demo)}
    )
    answer = app.test_client().post(
        "/predict", json={"instances": [[1, 2, 3]]}, headers={"X-Routing-Key": "k"}
    )
    assert answer.status_code == 200, answer.get_json()
    assert app.test_client().get("/models/1.0.0").get_json()["signature"]["status"] == "verified"


def wait_for(condition: Callable[[], bool], seconds: float = 30.0) -> bool:
    """Whether ``condition`` holds within ``seconds`` (checked every few milliseconds)."""
    import time

    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


@pytest.mark.parametrize("watch", [True, False], ids=["inotify", "polling"])
def test_a_model_sig_written_by_hand_is_a_change_like_a_metadata_edit(
    registry_root: Path, keys: dict[str, KeyPair], watch: bool
) -> None:
    ModelRegistry(registry_root).save_model("1.0.0", "model")
    reader = ModelRegistry(registry_root, trusted_keys=[keys["trusted"].public], watch=watch)
    assert reader.signature("1.0.0")["status"] == "unsigned"
    with pytest.raises(UntrustedArtefactError):
        reader.get_model("1.0.0")
    assert isinstance(reader.load_failure("1.0.0"), UntrustedArtefactError)
    folder = version_dir(registry_root, "1.0.0")
    cli_sign(folder, keys["trusted"])
    # this process sees it (status, and the remembered failure forgotten) as it sees a metadata edit
    assert wait_for(lambda: reader.signature("1.0.0")["status"] == "verified")
    assert reader.load_failure("1.0.0") is None
    assert reader.get_model("1.0.0") == "model"
    (folder / "model.sig").write_bytes(b"garbage")
    assert wait_for(lambda: reader.signature("1.0.0")["status"] == "invalid")


def test_signatures_and_the_pickle_allow_list_guard_one_load(
    registry_root: Path, keys: dict[str, KeyPair], marker: Path
) -> None:
    signer = ModelRegistry(registry_root, signing_key=keys["trusted"].private)
    signer.save_model("1.0.0", {"w": [1.0]})
    signer.save_model("1.1.0", Marker(marker))  # signed, but imports this test module's _touch
    ModelRegistry(registry_root).save_model("1.2.0", Marker(marker))  # neither signed nor allowed
    both = ModelRegistry(registry_root, trusted_keys=[keys["trusted"].public], pickle_allow=["builtins"])
    assert both.get_model("1.0.0") == {"w": [1.0]}
    with pytest.raises(UntrustedArtefactError, match="allow-list"):
        both.get_model("1.1.0")
    with pytest.raises(UntrustedArtefactError, match="no model"):  # the signature is checked first
        both.get_model("1.2.0")
    assert not marker.exists()


def test_a_signed_version_can_be_deleted(
    signed: ModelRegistry, registry_root: Path, keys: dict[str, KeyPair]
) -> None:
    signed.save_model("1.0.0", "old")
    signed.save_model("1.1.0", "new")
    signed.sign("1.0.0", keys["other"].private)  # a model.sig replaced after the publish
    signed.delete_version("1.0.0", actor="ana")
    assert signed.list_versions() == ["1.1.0"]
    assert not version_dir(registry_root, "1.0.0").exists()
    assert signed.get_model("1.1.0") == "new"
