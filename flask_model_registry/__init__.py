"""Discover, serve and promote versioned models from a Flask app.

``ModelRegistry`` is the registry itself (local disk or object storage); ``FlaskModelRegistry`` wires
it into an app as ``app.registry`` (named models, ``MODEL_REGISTRY_MODELS``: ``app.registries`` and
``get_registry(name)``), with a ``/models`` JSON API and a ``flask models`` CLI.
"""

from __future__ import annotations

from .context import get_registry
from .errors import (
    AccessDeniedError,
    ConfigError,
    CorruptStateError,
    CorruptVersionError,
    InvalidArgumentError,
    InvalidKeyError,
    InvalidMetadataError,
    InvalidVersionError,
    PreconditionFailedError,
    PromotionRefusedError,
    RegistryError,
    RollbackIncompleteError,
    RootMissingError,
    StageRuleError,
    StorageBackendMissingError,
    StorageUnavailableError,
    UnknownModelError,
    UntrustedArtefactError,
    VersionAliasError,
    VersionExistsError,
    VersionInUseError,
    VersionNotFoundError,
)
from .events import RegistryObserver
from .extension import FlaskModelRegistry
from .lifecycle import Lifecycle
from .registry import LoadedModel, ModelRegistry
from .routing import Router
from .timeline import Timelines

ModelRegistry.router_class = Router  # route() is built above the registry (see routing.py)
ModelRegistry.lifecycle_class = Lifecycle  # delete_version() and gc() too (see lifecycle.py)
ModelRegistry.timelines_class = Timelines  # as_of, timeline() and rollback(): see timeline.py
__version__ = "0.1.0"

__all__ = [
    "AccessDeniedError",
    "ConfigError",
    "CorruptStateError",
    "CorruptVersionError",
    "FlaskModelRegistry",
    "InvalidArgumentError",
    "InvalidKeyError",
    "InvalidMetadataError",
    "InvalidVersionError",
    "LoadedModel",
    "ModelRegistry",
    "PreconditionFailedError",
    "PromotionRefusedError",
    "RegistryError",
    "RegistryObserver",
    "RollbackIncompleteError",
    "RootMissingError",
    "StageRuleError",
    "StorageBackendMissingError",
    "StorageUnavailableError",
    "UnknownModelError",
    "UntrustedArtefactError",
    "VersionAliasError",
    "VersionExistsError",
    "VersionInUseError",
    "VersionNotFoundError",
    "__version__",
    "get_registry",
]
