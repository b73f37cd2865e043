"""Signed versions: what checking signatures costs a load and a listing.

- A signed load of a 64 MiB artefact (``require_signature``: model.sig read and verified, then the
  bytes' sha256 compared with the signed one) against the unsigned load of the same artefact. The
  signature covers the sha256 the load computes anyway: no second pass over the bytes.
- Listing 2,000 versions with each one's signature status, warm (statuses cached per metadata
  stamp), against the same listing without it; and the first, cold, listing for the record.

Run: ``python bench/signing.py`` (about a minute; writes 64 MiB to a temporary folder, and builds a
cached registry of 2,000 signed versions on first use).
"""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
from pathlib import Path

from _common import (
    MIB,
    Row,
    Target,
    cached_dir,
    interleaved,
    per_call,
    print_header,
    print_table,
    user_metadata,
    version_name,
)
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from example_app.model import LinearModel
from flask_model_registry import ModelRegistry

VERSIONS = 2000
LOAD_ROUNDS = 7
LIST_ROUNDS = 15


def write_keys(folder: Path) -> tuple[Path, Path]:
    """A fresh P-256 key pair as PEM files in ``folder``: (private, public)."""
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    private, public = folder / "bench.priv", folder / "bench.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def signed_registry(n: int) -> Path:
    """A registry of ``n`` versions, each signed as it was saved; its key pair in ``keys/``."""

    def build(root: Path) -> None:
        private, _ = write_keys(root / "keys")
        registry = ModelRegistry(root / "registry", watch=False, signing_key=private)
        for i in range(n):
            model = LinearModel(weights=(0.4 + i / 1e4, -1.3, 2.05), bias=0.5)
            registry.save_model(version_name(i), model, user_metadata(i), actor="bench")

    return cached_dir(f"signed-{n}", build)


def load_rows() -> list[Row]:
    folder = Path(tempfile.mkdtemp(prefix="signing-bench-"))
    try:
        private, public = write_keys(folder / "keys")
        block = os.urandom(MIB)
        model = [n.to_bytes(8, "little") + block[8:] for n in range(64)]
        ModelRegistry(folder / "registry", signing_key=private).save_model("1.0.0", model)
        del model
        gc.collect()
        # model_cache_size=0: every get_model loads the artefact again
        unsigned = ModelRegistry(folder / "registry", model_cache_size=0)
        signed = ModelRegistry(folder / "registry", model_cache_size=0, trusted_keys=[public])
        assert signed.signatures.required and signed.signature("1.0.0")["status"] == "verified"
        times = interleaved(
            {"unsigned": lambda: unsigned.get_model("1.0.0"), "signed": lambda: signed.get_model("1.0.0")},
            rounds=LOAD_ROUNDS,
        )
        return [
            Row(
                "signed load, 64 MiB",
                times["signed"],
                "unsigned load",
                times["unsigned"],
                Target("<= 1.1x", 1.1),
            )
        ]
    finally:
        shutil.rmtree(folder)
        gc.collect()


def list_rows() -> list[Row]:
    root = signed_registry(VERSIONS)
    public = root / "keys" / "bench.pub"
    registry = ModelRegistry(root / "registry", trusted_keys=[public])
    versions = registry.list_versions()
    assert len(versions) == VERSIONS

    def without() -> object:
        return [(v, registry.get_metadata(v)) for v in registry.list_versions()]

    def with_status() -> object:
        return [(v, registry.get_metadata(v), registry.signature(v)) for v in registry.list_versions()]

    cold = per_call(with_status, 1)  # the first listing reads and verifies every model.sig
    assert {registry.signature(v)["status"] for v in versions} == {"verified"}
    times = interleaved({"without": without, "with": with_status}, rounds=LIST_ROUNDS, number=3)
    return [
        Row(
            f"list {VERSIONS:,} + status, warm",
            times["with"],
            "list, no status",
            times["without"],
            Target("<= 1.5x", 1.5),
        ),
        Row(f"list {VERSIONS:,} + status, cold", cold, "list, no status", times["without"]),
    ]


def main() -> None:
    print_header(
        "signed versions: load and listing costs (local disk)",
        [
            "load: get_model with model_cache_size=0 (each call loads), medians of interleaved rounds",
            "signed: require_signature on; model.sig verified, the bytes' sha256 compared to the signed one",
            "listing: list_versions + get_metadata of each version, with and without signature(v);"
            " warm = statuses cached per metadata stamp; cold = the first listing of a fresh registry",
        ],
    )
    print_table(load_rows() + list_rows())


if __name__ == "__main__":
    main()
