"""Loading artefacts: the bytes unpickled are exactly the bytes hashed, and an artefact written by
another cloudpickle major or Python minor version loads with one warning naming both."""

from __future__ import annotations

import hashlib
import json
import logging
import platform
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from flask_model_registry import CorruptVersionError, ModelRegistry, loading

_MARKS: list[str] = []


def _ran(mark: str) -> str:
    _MARKS.append(mark)
    return mark


class RunsCode:
    """Unpickling this runs :func:`_ran`: proof that these bytes were loaded."""

    def __reduce__(self) -> Any:
        return (_ran, ("the rewritten artefact ran",))


class _RewriteWhenHashed:
    """``hashlib`` for :mod:`flask_model_registry.loading`, except that finishing a sha256 rewrites
    the artefact in place (same inode, as ``open('r+b')`` does) with other bytes."""

    def __init__(self, artefact: Path, payload: bytes) -> None:
        self.artefact, self.payload, self.rewrites = artefact, payload, 0

    def sha256(self, *args: Any) -> Any:
        real = hashlib.sha256(*args)
        outer = self

        class Digest:
            def update(self, data: Any) -> None:
                real.update(data)

            def hexdigest(self) -> str:
                with open(outer.artefact, "r+b") as f:
                    f.write(outer.payload)
                    f.truncate()
                outer.rewrites += 1
                return real.hexdigest()

        return Digest()


def test_a_file_rewritten_between_the_hash_and_the_load_never_runs(
    registry: ModelRegistry, registry_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On local disk the artefact is the file itself: rewritten in place once its sha256 has been
    computed, its new bytes (which would run code) must not be what is unpickled. (Object storage
    spools a private copy per load, which nothing else writes.)"""
    registry.save_model("1.0.0", {"weights": [1.0]})
    artefact = registry_root / "versions" / "1.0.0" / "model.pkl"
    hook = _RewriteWhenHashed(artefact, cloudpickle.dumps(RunsCode()))
    monkeypatch.setattr(loading, "hashlib", hook)
    _MARKS.clear()
    fresh = ModelRegistry(registry_root)
    assert fresh.get_model("1.0.0") == {"weights": [1.0]}
    assert hook.rewrites == 1, "the hash step ran, and the file was rewritten right after it"
    assert _MARKS == [], "the bytes that ran were not the bytes hashed"
    monkeypatch.undo()
    with pytest.raises(CorruptVersionError, match="sha256"):  # the rewrite itself is refused
        ModelRegistry(registry_root).get_model("1.0.0")
    assert _MARKS == []


def test_exact_bytes_also_for_a_large_artefact(registry: ModelRegistry, registry_root: Path) -> None:
    """Several read chunks: the model comes back whole, and a flipped byte is refused."""
    model = [bytes([n]) * (3 << 20) for n in range(5)]
    registry.save_model("1.0.0", model)
    assert ModelRegistry(registry_root).get_model("1.0.0") == model
    artefact = registry_root / "versions" / "1.0.0" / "model.pkl"
    data = bytearray(artefact.read_bytes())
    data[len(data) // 2] ^= 1
    artefact.write_bytes(bytes(data))
    with pytest.raises(CorruptVersionError, match="sha256"):
        ModelRegistry(registry_root).get_model("1.0.0")


# another cloudpickle or Python --------------------------------------------------------------------


def _record(registry_root: Path, **artifact: str) -> None:
    path = registry_root / "versions" / "1.0.0" / "metadata.json"
    metadata = json.loads(path.read_bytes())
    metadata["artifact"].update(artifact)
    path.write_text(json.dumps(metadata))


def _other(release: str, part: int) -> str:
    numbers = [int(n) for n in release.split(".")[:3]]
    numbers[part] += 1
    return ".".join(map(str, numbers))


@pytest.mark.parametrize(
    "recorded",
    [
        {"cloudpickle_version": _other(cloudpickle.__version__, 0)},
        {"python_version": _other(platform.python_version(), 1)},
        {"cloudpickle_version": "1.6.0", "python_version": "3.8.10"},
    ],
    ids=["cloudpickle major", "python minor", "both"],
)
def test_an_artefact_from_another_cloudpickle_or_python_loads_with_one_warning(
    registry: ModelRegistry, registry_root: Path, caplog: pytest.LogCaptureFixture, recorded: dict[str, str]
) -> None:
    registry.save_model("1.0.0", {"weights": [1.0]})
    _record(registry_root, **recorded)
    fresh = ModelRegistry(registry_root)
    with caplog.at_level(logging.WARNING, logger="flask_model_registry"):
        assert fresh.get_model("1.0.0") == {"weights": [1.0]}
        assert fresh.get_model("1.0.0") == {"weights": [1.0]}
        assert fresh.get_latest_model() == {"weights": [1.0]}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    saved = json.loads((registry_root / "versions/1.0.0/metadata.json").read_bytes())["artifact"]
    for name in (saved["cloudpickle_version"], saved["python_version"]):
        assert name in warnings[0]
    for name in (cloudpickle.__version__, platform.python_version()):
        assert name in warnings[0]
    assert "1.0.0" in warnings[0]


@pytest.mark.parametrize(
    "recorded",
    [
        {},
        {"cloudpickle_version": cloudpickle.__version__.split(".")[0] + ".99.0"},
        {"python_version": ".".join(platform.python_version().split(".")[:2]) + ".99"},
    ],
    ids=["same", "other cloudpickle minor", "other python patch"],
)
def test_no_warning_within_a_cloudpickle_major_and_python_minor(
    registry: ModelRegistry, registry_root: Path, caplog: pytest.LogCaptureFixture, recorded: dict[str, str]
) -> None:
    registry.save_model("1.0.0", "model")
    if recorded:
        _record(registry_root, **recorded)
    with caplog.at_level(logging.WARNING, logger="flask_model_registry"):
        assert ModelRegistry(registry_root).get_model("1.0.0") == "model"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_the_version_warning_does_not_bypass_the_sha256(
    registry: ModelRegistry, registry_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry.save_model("1.0.0", "model")
    _record(registry_root, cloudpickle_version="1.0.0")
    (registry_root / "versions/1.0.0/model.pkl").write_bytes(cloudpickle.dumps("tampered"))
    with pytest.raises(CorruptVersionError, match="sha256"):
        ModelRegistry(registry_root).get_model("1.0.0")
