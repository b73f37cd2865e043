"""``FlaskModelRegistry``: wires a :class:`ModelRegistry` into a Flask app.

Follows the usual extension pattern: ``init_app`` may be called for several apps (each gets its own
registry, from its own config), nothing app-specific is kept on the extension object, and the
registry is reachable as ``app.registry`` / ``current_app.registry`` and
``app.extensions["model_registry"]``; named models (``MODEL_REGISTRY_MODELS``, as Flask-SQLAlchemy's
``SQLALCHEMY_BINDS``) as the read-only mapping ``app.registries``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from flask import Flask

from .api import register_api
from .cli import models_cli
from .config import CONFIG_DEFAULTS, MODELS_KEY, api_token, load_config, registry_arguments
from .context import EXTENSION_KEY, NAMED_KEY, get_registries, get_registry
from .errors import ConfigError, StageRuleError
from .monitoring import init_monitoring
from .registry import ModelRegistry
from .tokens import token_table
from .ui import register_ui

__all__ = ["CONFIG_DEFAULTS", "FlaskModelRegistry"]


def _named_registry(name: str, arguments: dict[str, Any]) -> ModelRegistry:
    """A named model's registry; a setting that only fails in combination (``require_signature``
    without trusted keys) is a :class:`ConfigError` naming the model."""
    try:
        return ModelRegistry(**arguments)
    except ValueError as exc:
        raise ConfigError(MODELS_KEY, f"{MODELS_KEY}[{name!r}]: {exc}") from None


class FlaskModelRegistry:
    """The Flask extension: ``FlaskModelRegistry(app)`` or ``ext.init_app(app)`` in a factory."""

    def __init__(self, app: Flask | None = None) -> None:
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Build the app's registry from its ``MODEL_REGISTRY_*`` config (app config first, then the
        environment, each parsed by type: :class:`ConfigError` on a bad value); register API and CLI."""
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                "FlaskModelRegistry is already initialised on this app; call init_app once per app"
            )
        load_config(app.config)  # typed: "false" from the environment is False; bad values raise
        config = app.config
        # named tokens beside MODEL_REGISTRY_API_TOKEN: a clash is a ConfigError now, not at a request
        token_table(config["MODEL_REGISTRY_TOKENS"], api_token(config))
        registry = _default_registry(registry_arguments(config))  # the same table as named models
        named = MappingProxyType(
            {
                name: _named_registry(name, registry_arguments(config, settings))
                for name, settings in (config["MODEL_REGISTRY_MODELS"] or {}).items()
            }
        )
        app.extensions[EXTENSION_KEY] = registry
        app.extensions[NAMED_KEY] = named
        app.registry = registry  # type: ignore[attr-defined]
        app.registries = named  # type: ignore[attr-defined]
        if config["MODEL_REGISTRY_API_ENABLED"]:
            register_api(app, config["MODEL_REGISTRY_URL_PREFIX"])
        if config["MODEL_REGISTRY_UI_ENABLED"]:
            register_ui(app, config["MODEL_REGISTRY_URL_PREFIX"])
        app.cli.add_command(models_cli)
        init_monitoring(app, config["MODEL_REGISTRY_API_ENABLED"] and config["MODEL_REGISTRY_URL_PREFIX"])

    @property
    def registry(self) -> ModelRegistry:
        """The registry of the current app (needs an app context)."""
        return get_registry()

    @property
    def registries(self) -> Mapping[str, ModelRegistry]:
        """The named registries of the current app (needs an app context)."""
        return get_registries()


def _default_registry(arguments: dict[str, Any]) -> ModelRegistry:
    """The app's default registry; a stage rule that names a stage outside its allowed stages is a
    :class:`ConfigError`, as every malformed rule is (named models: :func:`_named_registry`)."""
    try:
        return ModelRegistry(**arguments)
    except StageRuleError as exc:
        key = "MODEL_REGISTRY_STAGE_RULES"
        raise ConfigError(key, f"{key}: {exc}") from None
