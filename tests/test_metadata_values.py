"""Values JSON cannot carry as they are (NaN, Infinity, numbers that overflow to one, lone
surrogates, over-long integers) are refused by every write, before anything is written: what the
registry writes, it can always read back and serve."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flask_model_registry import InvalidMetadataError, ModelRegistry

#: Values no write may store, by name.
UNCARRIABLE: dict[str, Any] = {
    "NaN": {"auc": math.nan},
    "Infinity": {"auc": math.inf},
    "-Infinity in a list": {"scores": [1.0, -math.inf]},
    "1e999 (overflows)": {"auc": float("1e999")},
    "a lone surrogate value": {"note": "x\ud800"},
    "a lone surrogate key": {"\udfff": 1},
    "a nested lone surrogate": {"a": [{"b": "\udc00"}]},
    "an int of 5,000 digits": {"n": 10**4999},
}


@pytest.fixture
def unlimited_ints() -> Any:
    """Python's own limit on int <-> str conversions switched off, as some apps do: the registry's
    limit still holds."""
    before = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    yield
    sys.set_int_max_str_digits(before)


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


#: Every write that takes user metadata, as a call on a registry that holds 1.0.0.
WRITES: dict[str, Callable[[ModelRegistry, Any], Any]] = {
    "save_model": lambda registry, metadata: registry.save_model("2.0.0", "model", metadata),
    "update_metadata": lambda registry, metadata: registry.update_metadata("1.0.0", metadata),
}


@pytest.mark.parametrize("write", list(WRITES))
@pytest.mark.parametrize("name", list(UNCARRIABLE))
def test_writes_refuse_it_and_change_nothing(
    registry: ModelRegistry, registry_root: Path, name: str, write: str
) -> None:
    registry.save_model("1.0.0", "model", {"stage": "prod"})
    before = files_under(registry_root)
    with pytest.raises(InvalidMetadataError):
        WRITES[write](registry, UNCARRIABLE[name])
    assert files_under(registry_root) == before
    assert registry.list_versions() == ["1.0.0"]
    assert len(registry.history()) == 1


def test_an_over_long_int_is_refused_even_without_pythons_limit(
    registry: ModelRegistry, registry_root: Path, unlimited_ints: None
) -> None:
    with pytest.raises(InvalidMetadataError, match="at most 4300 digits"):
        registry.save_model("1.0.0", "model", {"n": 10**4300})
    registry.save_model("1.0.0", "model", {"n": 10**4299})  # 4,300 digits: written and read back
    assert ModelRegistry(registry_root).get_metadata("1.0.0")["n"] == 10**4299


@pytest.mark.parametrize(
    "body",
    [
        b'{"auc": NaN}',
        b'{"auc": Infinity}',
        b'{"auc": -Infinity}',
        b'{"auc": 1e999}',
        b'{"note": "\\ud800"}',
        b'{"\\udfff": true}',
        b'{"n": ' + b"9" * 5000 + b"}",
    ],
)
def test_patch_refuses_it_with_a_400_and_changes_nothing(
    client, auth_headers, json_error, registry: ModelRegistry, registry_root: Path, body: bytes
) -> None:
    registry.save_model("1.0.0", "model", {"stage": "prod"})
    before = files_under(registry_root)
    response = client.patch("/models/1.0.0", data=body, content_type="application/json", headers=auth_headers)
    assert response.status_code == 400, response.data
    json_error(response)
    assert files_under(registry_root) == before


def test_on_s3_too(s3_server, tmp_path: Path) -> None:
    registry = ModelRegistry(
        s3_server.url(f"values-{tmp_path.name}"), storage_options=s3_server.storage_options
    )
    registry.save_model("1.0.0", "model")
    for metadata in UNCARRIABLE.values():
        with pytest.raises(InvalidMetadataError):
            registry.save_model("2.0.0", "model", metadata)
        with pytest.raises(InvalidMetadataError):
            registry.update_metadata("1.0.0", metadata)
    fs = s3_server.filesystem()
    assert not fs.exists(f"{s3_server.bucket}/values-{tmp_path.name}/versions/2.0.0")
    assert registry.list_versions() == ["1.0.0"]
    assert ModelRegistry(registry.root, storage_options=s3_server.storage_options).get_metadata("1.0.0")
