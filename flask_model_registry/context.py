"""Where the current app keeps its registries; shared by the extension, the HTTP API and the CLI."""

from __future__ import annotations

from collections.abc import Mapping

from flask import current_app, has_app_context

from .errors import UnknownModelError
from .registry import ModelRegistry

EXTENSION_KEY = "model_registry"
#: ``app.extensions`` key of the read-only mapping name → registry of the named models.
NAMED_KEY = "model_registries"


def get_registries() -> Mapping[str, ModelRegistry]:
    """The named registries of the current app (``current_app.registries``); empty when none."""
    get_registry()
    return current_app.extensions[NAMED_KEY]


def get_registry(name: str | None = None) -> ModelRegistry:
    """The current app's default registry, or its named model ``name`` (``MODEL_REGISTRY_MODELS``).

    Raises :class:`UnknownModelError` (a ``KeyError``) naming an unknown model, and a
    ``RuntimeError`` outside an app context or before ``init_app``.
    """
    if not has_app_context():
        raise RuntimeError(
            "get_registry() needs an application context: call it in a request, a CLI command or"
            " 'with app.app_context():'"
        )
    try:
        registry = current_app.extensions[EXTENSION_KEY]
    except KeyError:
        raise RuntimeError(
            "FlaskModelRegistry is not initialised on this app: call FlaskModelRegistry(app)"
            " or init_app(app) first"
        ) from None
    if name is None:
        return registry
    named: Mapping[str, ModelRegistry] = current_app.extensions[NAMED_KEY]
    try:
        return named[name]
    except (KeyError, TypeError):  # TypeError: an unhashable name
        known = ", ".join(sorted(named)) or "none are configured in MODEL_REGISTRY_MODELS"
        raise UnknownModelError(f"no model named {name!r} (named models: {known})") from None
