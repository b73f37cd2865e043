"""Storage backends: where a registry's bytes live. Pick one from a root path or URL."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import Publication, Stamp, Storage
from .local import LocalStorage


def open_storage(
    root: str,
    *,
    storage_options: Mapping[str, Any] | None = None,
    refresh_interval: float | None = None,
    full_refresh: float | None = None,
    watch: bool = True,
) -> Storage:
    """The storage for ``root``: a local path (or ``file://`` URL), or any fsspec URL."""
    scheme, sep, rest = root.partition("://")
    if not sep or scheme == "file":
        return LocalStorage(rest if sep else root, watch=watch, refresh_interval=refresh_interval or 0.0)
    from .remote import FsspecStorage

    return FsspecStorage(
        root, storage_options=storage_options, refresh_interval=refresh_interval, full_refresh=full_refresh
    )


__all__ = ["LocalStorage", "Publication", "Stamp", "Storage", "open_storage"]
