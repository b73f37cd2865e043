"""The extension's ``MODEL_REGISTRY_*`` config keys, read and parsed by type.

Config often comes from the environment as strings (``app.config.from_prefixed_env()`` turns
``FLASK_MODEL_REGISTRY_API_ENABLED=False`` into the *string* ``"False"``, which Python finds true),
so every key is parsed by its type at ``init_app``, and a value that is not of it is a
:class:`ConfigError` naming the key, never a silent default.

Where a value comes from, first match wins: the app's config (set in code, ``from_object``,
``from_prefixed_env()`` …), then the registry's own environment variable of the same name
(``MODEL_REGISTRY_API_ENABLED=false``), then the default. The parsed value is written back to the
app's config, so ``app.config`` shows what the extension uses.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import ConfigError, InvalidMetadataError
from .metadata import check_stage
from .pickle_allow import PickleAllowList
from .registry import DEFAULT_CANARY_WEIGHT, DEFAULT_MODEL_CACHE_SIZE, DEFAULT_RETIRED_STAGES
from .routing import check_weight
from .rules import StageRules
from .signing import key_items, load_signing_key, load_trusted_keys
from .tokens import parse_tokens
from .webhooks.message import parse_webhooks

PREFIX = "MODEL_REGISTRY_"
Checked = TypeVar("Checked")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_SECRET = frozenset({"API_TOKEN", "STORAGE_OPTIONS", "WEBHOOKS"})  # never echoed in an error


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):  # from_prefixed_env parses "1" as JSON: 1
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError("a boolean: true/false, 1/0, yes/no or on/off (any letter case)")


def _number(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise ValueError("a number of seconds") from None
    else:
        raise ValueError("a number of seconds")
    if not math.isfinite(number) or number < 0:
        raise ValueError("a finite number of seconds, 0 or more")
    return number


def _positive(value: Any) -> float:
    """A number of seconds above 0 (a wait, a timeout)."""
    number = _number(value)
    if number <= 0:
        raise ValueError("a number of seconds above 0")
    return number


def _hours(value: Any) -> float:
    try:
        return _number(value)
    except ValueError:
        raise ValueError("a finite number of hours, 0 or more (such as 24 or 0.5)") from None


def _count(value: Any) -> int:
    if isinstance(value, str):
        value = value.strip()
        if not value.isdigit():
            raise ValueError("a whole number, 0 or more")
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    raise ValueError("a whole number, 0 or more")


#: The console session's lifetime bounds, in seconds: a minute (a shorter one expires while the
#: sign-in form is filled in) to 366 days (a cookie's expiry date must stay a date browsers and
#: Python's datetime can write).
SESSION_LIFETIME_RANGE = (60, 366 * 24 * 3600)


def _lifetime(value: Any) -> int:
    """Whole seconds within :data:`SESSION_LIFETIME_RANGE`."""
    low, high = SESSION_LIFETIME_RANGE
    try:
        seconds = _count(value)
    except ValueError:
        seconds = -1
    if not low <= seconds <= high:
        raise ValueError(f"a whole number of seconds from {low} (a minute) to {high} (366 days)")
    return seconds


def _weight(value: Any) -> float:
    """A share of traffic: a number in (0, 1] (``0.05``, or ``"0.05"`` from the environment)."""
    try:
        return check_weight(value)
    except ValueError:
        raise ValueError("a number in (0, 1], such as 0.05") from None


def _text(value: Any) -> str:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError("a non-empty string")
    return value


#: What ``MODEL_REGISTRY_API_TOKEN`` may say to mean "no token" (any letter case, spaces around
#: ignored); as JSON from ``from_prefixed_env()``, ``false``, ``0`` and ``null`` arrive parsed.
NO_TOKEN = frozenset({"", "false", "no", "off", "0", "null", "none"})


def _token(value: Any) -> str | None:
    """A secret, or None for no token: ``None``, ``False``, ``0`` or a :data:`NO_TOKEN` spelling,
    wherever it came from. Anything else but a string is refused rather than turned into one:
    ``from_prefixed_env()`` reads ``FLASK_..._API_TOKEN=1e3`` as the number 1000.0, whose text is
    no longer the token."""
    if value is None or (type(value) in (bool, int) and not value):
        return None
    if not isinstance(value, str):
        raise ValueError(
            f"a string, not {type(value).__name__} (from_prefixed_env() parses a token that looks like"
            " JSON; quote it: FLASK_MODEL_REGISTRY_API_TOKEN='\"...\"')"
        )
    if value.strip().lower() in NO_TOKEN:
        return None
    if value != value.strip() or not value.isascii() or not value.isprintable():
        raise ValueError(
            "printable ASCII without spaces around it, as an HTTP header carries it"
            " (for example: openssl rand -hex 32)"
        )
    return value


def api_token(config: Mapping[str, Any]) -> str | None:
    """The API token of an app's ``config`` as it is now (also one set after ``init_app``), or None:
    the one reading of it, so every place that checks the token agrees on what means "no token"."""
    key = PREFIX + "API_TOKEN"
    try:
        return _token(config.get(key))
    except ValueError as exc:
        raise ConfigError(key, f"{key}: the value must be {exc}") from None


def _json_text(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise ValueError("JSON") from None
    return value


def json_object(value: Any) -> dict[str, Any]:
    """A mapping, or a JSON object in a string: ``{"anon": true}``."""
    value = _json_text(value)
    if not isinstance(value, Mapping):
        raise ValueError("a JSON object")
    return dict(value)


def _names(value: Any) -> list[str]:
    """A list of names: a list, a JSON array, or a comma-separated string (``staging,prod``)."""
    if isinstance(value, str):
        text = value.strip()
        value = (
            _json_text(text) if text.startswith("[") else [p.strip() for p in text.split(",") if p.strip()]
        )
    if not isinstance(value, (list, tuple, set, frozenset)) or not all(isinstance(v, str) for v in value):
        raise ValueError("a list of names: a JSON array of strings or a comma-separated string")
    return list(value)


def _optional(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``parse``, with ``None`` (or an empty string, or ``null``) meaning "not set"."""

    def parse_optional(value: Any) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "null", "none")):
            return None
        return parse(value)

    return parse_optional


def _checked(value: Checked, check: Callable[[Checked], object], what: str) -> Checked:
    """``value`` once ``check`` accepts it; else a ``ValueError``: it must be ``what``, and why not."""
    try:
        check(value)
    except ValueError as exc:
        raise ValueError(f"{what} ({exc})") from None
    return value


def _trusted_keys(value: Any) -> list[str]:
    """Trusted public keys: PEM file paths, PEM texts and folders of ``*.pub`` files, as a list or
    one comma-separated string; each one read now, so a bad one fails at ``init_app``."""
    if isinstance(value, (str, os.PathLike)):
        value = key_items(os.fspath(value))
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, (str, os.PathLike)) for v in value):
        raise ValueError("a list of public keys (paths, PEM texts, folders) or a comma-separated string")
    return _checked([os.fspath(v) for v in value], load_trusted_keys, "readable elliptic-curve public keys")


def _signing_key(value: Any) -> str:
    """The path of an elliptic-curve PEM private key, read now so a bad one fails at ``init_app``."""
    return _checked(_text(value), load_signing_key, "a readable elliptic-curve private key")


def _stage_names(value: Any) -> list[str]:
    names = _names(value)
    for name in names:
        try:
            check_stage(name, None)
        except InvalidMetadataError as exc:
            raise ValueError(f"a list of stage names ({exc})") from None
    return names


def _stage_rules(value: Any) -> dict[str, Any]:
    """Stage rules (a mapping or its JSON text), checked as the registry checks them."""
    return _checked(json_object(value), StageRules, "stage rules as docs/access.md describes them")


def _module_names(value: Any) -> list[str]:
    """The pickle allow-list: module names, as a list or a comma-separated string."""
    names = _names(value)
    try:
        return list(PickleAllowList(names).names)
    except ValueError as exc:
        raise ValueError(f"a list of dotted module names ({exc})") from None


# named models -------------------------------------------------------------------------------------

MODELS_KEY = PREFIX + "MODELS"
#: What a model name looks like; a version never does (it starts with a digit), which is how the
#: HTTP routes tell ``<prefix>/<name>`` from ``<prefix>/<version>``.
NAME_PATTERN = r"[a-z][a-z0-9_-]{0,63}"
#: Words of the API's own under the URL prefix, which no model may be named.
RESERVED_NAMES = frozenset({"latest", "openapi.json", "ui", "health", "metrics"})
_NAME = re.compile(NAME_PATTERN)


@dataclass(frozen=True)
class Setting:
    """One ``ModelRegistry`` argument the config sets, for the app's default registry and for
    named models alike."""

    #: The ``ModelRegistry`` keyword argument it sets.
    argument: str
    #: The app-wide key (without the prefix) that sets it for the app's default registry.
    key: str
    #: Whether a named model without a value of its own takes the app-wide one (False for the root
    #: and the storage options: options for one store mean nothing to another).
    inherited: bool
    #: How a named model's own value is parsed.
    parse: Callable[[Any], Any]


#: The one table of what builds a ``ModelRegistry`` from config: each setting a named model's dict
#: may hold, keyed by its name there. The app's default registry is built from the same rows (every
#: argument from its app-wide key), so a new ``ModelRegistry`` argument is one more row and reaches
#: both; ``tests/test_config.py`` checks every keyword argument of ``ModelRegistry`` has a row.
MODEL_SETTINGS: dict[str, Setting] = {
    "root": Setting("root", "ROOT", False, _text),
    "storage_options": Setting("storage_options", "STORAGE_OPTIONS", False, _optional(json_object)),
    "refresh_interval": Setting("refresh_interval", "REFRESH_INTERVAL", True, _optional(_number)),
    "full_refresh": Setting("full_refresh", "FULL_REFRESH", True, _optional(_number)),
    "stages": Setting("allowed_stages", "STAGES", True, _optional(_stage_names)),
    "model_cache_size": Setting("model_cache_size", "MODEL_CACHE_SIZE", True, _count),
    "watch": Setting("watch", "WATCH", True, _bool),
    "canary_weight": Setting("canary_weight", "CANARY_WEIGHT", True, _weight),
    "stage_rules": Setting("stage_rules", "STAGE_RULES", True, _optional(_stage_rules)),
    "retired_stages": Setting("retired_stages", "RETIRED_STAGES", True, _stage_names),
    "pickle_allow": Setting("pickle_allow", "PICKLE_ALLOW", True, _optional(_module_names)),
    "trusted_keys": Setting("trusted_keys", "TRUSTED_KEYS", True, _optional(_trusted_keys)),
    "require_signature": Setting("require_signature", "REQUIRE_SIGNATURE", True, _optional(_bool)),
    "signing_key": Setting("signing_key", "SIGNING_KEY", True, _optional(_signing_key)),
}


def check_model_name(name: Any) -> str:
    """``name`` if it can name a model (and a URL segment), else a :class:`ConfigError` saying why."""
    where = f"{MODELS_KEY}: model name {name!r}"
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(
            MODELS_KEY, f"{where} must be a lowercase letter, then up to 63 of a-z, 0-9, '_' and '-'"
        )
    if name in RESERVED_NAMES:
        words = ", ".join(sorted(RESERVED_NAMES))
        raise ConfigError(MODELS_KEY, f"{where} is one of the API's own words ({words})")
    return name


def _model(name: str, spec: Any) -> dict[str, Any]:
    where = f"{MODELS_KEY}[{name!r}]"
    if not isinstance(spec, Mapping):
        spec = {"root": spec}
    elif "root" not in spec:
        raise ConfigError(MODELS_KEY, f"{where} needs a 'root'")
    unknown = sorted(map(repr, set(spec) - set(MODEL_SETTINGS)))
    if unknown:
        known = ", ".join(MODEL_SETTINGS)
        raise ConfigError(MODELS_KEY, f"{where}: unknown key {', '.join(unknown)} (known: {known})")
    settings = {}
    for key, value in spec.items():
        try:
            settings[key] = MODEL_SETTINGS[key].parse(value)
        except ValueError as exc:
            shown = "the value" if key == "storage_options" else repr(value)[:80]
            raise ConfigError(MODELS_KEY, f"{where}[{key!r}]: {shown} must be {exc}") from None
    return settings


def parse_models(value: Any) -> dict[str, dict[str, Any]]:
    """``MODEL_REGISTRY_MODELS``, a mapping (or its JSON text) name → root, or name → dict of
    settings: each model's checked settings, ``{name: {"root": …, "stages": …}}``."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ConfigError(MODELS_KEY, f"{MODELS_KEY} is not valid JSON ({exc})") from None
    if not isinstance(value, Mapping):
        raise ConfigError(
            MODELS_KEY, f"{MODELS_KEY} must map model names to roots or dicts, not {type(value).__name__}"
        )
    return {check_model_name(name): _model(name, spec) for name, spec in value.items()}


def registry_arguments(
    config: Mapping[str, Any], settings: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The ``ModelRegistry`` arguments from the (loaded) ``config``: of the app's default registry
    when ``settings`` is None (every argument from its app-wide key), else of a named model (its own
    settings, the inherited rest from the app-wide keys)."""
    arguments = {}
    for name, setting in MODEL_SETTINGS.items():
        app_wide = config.get(PREFIX + setting.key)
        if settings is None:
            arguments[setting.argument] = app_wide
        elif name in settings:
            arguments[setting.argument] = settings[name]
        elif setting.inherited and app_wide is not None:
            arguments[setting.argument] = app_wide
    return arguments


@dataclass(frozen=True)
class Key:
    """One config key: its default and how a value of it is parsed."""

    default: Any
    parse: Callable[[Any], Any]


#: Every key the extension reads (without the ``MODEL_REGISTRY_`` prefix): default and parser.
KEYS: dict[str, Key] = {
    "ROOT": Key(None, _optional(_text)),
    "URL_PREFIX": Key("/models", _text),
    "API_ENABLED": Key(True, _bool),
    "API_TOKEN": Key(None, _token),
    "TOKENS": Key({}, parse_tokens),
    "STORAGE_OPTIONS": Key(None, _optional(json_object)),
    "REFRESH_INTERVAL": Key(None, _optional(_number)),
    "FULL_REFRESH": Key(None, _optional(_number)),
    "STAGES": Key(None, _optional(_stage_names)),
    "MODEL_CACHE_SIZE": Key(DEFAULT_MODEL_CACHE_SIZE, _count),
    "WATCH": Key(True, _bool),
    "REQUIRE_IF_MATCH": Key(False, _bool),
    "MODELS": Key(None, _optional(parse_models)),
    "CANARY_WEIGHT": Key(DEFAULT_CANARY_WEIGHT, _weight),
    "STAGE_RULES": Key(None, _optional(_stage_rules)),
    "RETIRED_STAGES": Key(list(DEFAULT_RETIRED_STAGES), _stage_names),
    "PICKLE_ALLOW": Key(None, _optional(_module_names)),
    "UI_ENABLED": Key(True, _bool),
    "UI_SESSION_LIFETIME": Key(8 * 3600, _lifetime),
    "WEBHOOKS": Key([], parse_webhooks),
    "WEBHOOK_RETRY_BASE": Key(10.0, _positive),
    "WEBHOOK_RETRY_HOURS": Key(24.0, _hours),
    "WEBHOOK_TIMEOUT": Key(10.0, _positive),
    "WEBHOOK_POLL_INTERVAL": Key(1.0, _positive),
    "TRUSTED_KEYS": Key(None, _optional(_trusted_keys)),
    # None: on when trusted keys are given (a named model's own keys turn it on for that model)
    "REQUIRE_SIGNATURE": Key(None, _optional(_bool)),
    "SIGNING_KEY": Key(None, _optional(_signing_key)),
}

#: ``{"MODEL_REGISTRY_<KEY>": default}`` of every key.
CONFIG_DEFAULTS: dict[str, Any] = {PREFIX + name: key.default for name, key in KEYS.items()}


def load_config(config: MutableMapping[str, Any], environ: Mapping[str, str] | None = None) -> None:
    """Set every missing key of ``config`` from ``environ`` (else its default), then parse every key
    by type in place; :class:`ConfigError` names the first key whose value is not of its type."""
    environ = os.environ if environ is None else environ
    for name, key in KEYS.items():
        full = PREFIX + name
        source = "app.config" if full in config else f"the environment variable {full}"
        config.setdefault(full, environ.get(full, key.default))
        try:
            config[full] = key.parse(config[full])
        except ConfigError:  # already names the key and what is wrong
            raise
        except ValueError as exc:
            shown = "the value" if name in _SECRET else repr(config[full])[:80]
            raise ConfigError(full, f"{full}: {shown} (from {source}) must be {exc}") from None
    require = PREFIX + "REQUIRE_SIGNATURE"
    if config[require] and not config[PREFIX + "TRUSTED_KEYS"]:
        raise ConfigError(require, f"{require} is on, but MODEL_REGISTRY_TRUSTED_KEYS names no key to trust")
    trusted = PREFIX + "TRUSTED_KEYS"
    if config[require] is not False and config[trusted] and not load_trusted_keys(config[trusted]):
        raise ConfigError(
            trusted,
            f"{trusted} names no key to trust (a folder without *.pub files?); signatures would be"
            f" required with nothing to verify them (set {require} to false to accept that)",
        )
