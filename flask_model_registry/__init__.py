"""Discover, serve and promote versioned models from a Flask app.

``ModelRegistry`` is the registry itself (local disk or object storage); ``FlaskModelRegistry`` wires
it into an app as ``app.registry``, with a ``/models`` JSON API and a ``flask models`` CLI.
"""

from __future__ import annotations

from .errors import (
    ConfigError,
    CorruptVersionError,
    InvalidArgumentError,
    InvalidMetadataError,
    InvalidVersionError,
    PreconditionFailedError,
    RegistryError,
    StorageBackendMissingError,
    StorageUnavailableError,
    VersionAliasError,
    VersionExistsError,
    VersionNotFoundError,
)
from .extension import FlaskModelRegistry
from .registry import LoadedModel, ModelRegistry

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "CorruptVersionError",
    "FlaskModelRegistry",
    "InvalidArgumentError",
    "InvalidMetadataError",
    "InvalidVersionError",
    "LoadedModel",
    "ModelRegistry",
    "PreconditionFailedError",
    "RegistryError",
    "StorageBackendMissingError",
    "StorageUnavailableError",
    "VersionAliasError",
    "VersionExistsError",
    "VersionNotFoundError",
    "__version__",
]
