"""``FlaskModelRegistry``: wires a :class:`ModelRegistry` into a Flask app.

Follows the usual extension pattern: ``init_app`` may be called for several apps (each gets its own
registry, from its own config), nothing app-specific is kept on the extension object, and the
registry is reachable as ``app.registry`` / ``current_app.registry`` and
``app.extensions["model_registry"]``.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from .api import register_api
from .cli import models_cli
from .context import EXTENSION_KEY, get_registry
from .registry import DEFAULT_MODEL_CACHE_SIZE, ModelRegistry
from .ui import register_ui

#: Every config key the extension reads, with its default (set with ``app.config.setdefault``).
CONFIG_DEFAULTS: dict[str, Any] = {
    "MODEL_REGISTRY_ROOT": None,
    "MODEL_REGISTRY_URL_PREFIX": "/models",
    "MODEL_REGISTRY_API_ENABLED": True,
    "MODEL_REGISTRY_API_TOKEN": None,
    "MODEL_REGISTRY_STORAGE_OPTIONS": None,
    "MODEL_REGISTRY_REFRESH_INTERVAL": None,
    "MODEL_REGISTRY_STAGES": None,
    "MODEL_REGISTRY_MODEL_CACHE_SIZE": DEFAULT_MODEL_CACHE_SIZE,
    "MODEL_REGISTRY_WATCH": True,
    "MODEL_REGISTRY_UI_ENABLED": True,
    "MODEL_REGISTRY_UI_SESSION_LIFETIME": 8 * 3600,
}


class FlaskModelRegistry:
    """The Flask extension: ``FlaskModelRegistry(app)`` or ``ext.init_app(app)`` in a factory."""

    def __init__(self, app: Flask | None = None) -> None:
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Build the app's registry from its ``MODEL_REGISTRY_*`` config; register API and CLI."""
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                "FlaskModelRegistry is already initialised on this app; call init_app once per app"
            )
        for key, value in CONFIG_DEFAULTS.items():
            app.config.setdefault(key, value)
        config = app.config
        registry = ModelRegistry(
            config["MODEL_REGISTRY_ROOT"],
            storage_options=config["MODEL_REGISTRY_STORAGE_OPTIONS"],
            refresh_interval=config["MODEL_REGISTRY_REFRESH_INTERVAL"],
            allowed_stages=config["MODEL_REGISTRY_STAGES"],
            model_cache_size=config["MODEL_REGISTRY_MODEL_CACHE_SIZE"],
            watch=config["MODEL_REGISTRY_WATCH"],
        )
        app.extensions[EXTENSION_KEY] = registry
        app.registry = registry  # type: ignore[attr-defined]
        if config["MODEL_REGISTRY_API_ENABLED"]:
            register_api(app, config["MODEL_REGISTRY_URL_PREFIX"])
        if config["MODEL_REGISTRY_UI_ENABLED"]:
            register_ui(app, config["MODEL_REGISTRY_URL_PREFIX"])
        app.cli.add_command(models_cli)

    @property
    def registry(self) -> ModelRegistry:
        """The registry of the current app (needs an app context)."""
        return get_registry()
