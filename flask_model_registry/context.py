"""Where the current app keeps its registry; shared by the extension, the HTTP API and the CLI."""

from __future__ import annotations

from flask import current_app

from .registry import ModelRegistry

EXTENSION_KEY = "model_registry"


def get_registry() -> ModelRegistry:
    """The registry of the current app; a clear error if the extension was not initialised."""
    try:
        return current_app.extensions[EXTENSION_KEY]
    except KeyError:
        raise RuntimeError(
            "FlaskModelRegistry is not initialised on this app: call FlaskModelRegistry(app)"
            " or init_app(app) first"
        ) from None
