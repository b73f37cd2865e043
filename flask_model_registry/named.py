"""Named registries beside the default one: the ``MODEL_REGISTRY_MODELS`` config.

As Flask-SQLAlchemy's ``SQLALCHEMY_BINDS``: a mapping name → root (a path or fsspec URL), or name →
dict of that registry's own settings. Settings a dict leaves out come from the app-wide
``MODEL_REGISTRY_*`` keys, except ``storage_options``: options for one store mean nothing (or the
wrong thing) to another. Everything is checked at ``init_app``; a bad name, key or value is a
``ValueError`` naming it.

The HTTP routes tell a name from a version by its first character: names start with a letter,
SemVer versions with a digit.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from .errors import InvalidMetadataError
from .metadata import check_stage
from .registry import ModelRegistry

CONFIG_KEY = "MODEL_REGISTRY_MODELS"

#: What a model name looks like; a version never does (it starts with a digit).
NAME_PATTERN = r"[a-z][a-z0-9_-]{0,63}"
#: Words of the API's own under the URL prefix, which no model may be named.
RESERVED_NAMES = frozenset({"latest", "openapi.json", "ui", "health", "metrics"})

_NAME = re.compile(NAME_PATTERN)


def _check_root(where: str, value: Any) -> str:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where} must be a path or an fsspec URL, not {value!r}")
    return value


def _check_options(where: str, value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ValueError(f"{where} must be a dict of fsspec options, not {type(value).__name__}")
    return dict(value)


def _check_interval(where: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{where} must be a number of seconds >= 0, not {value!r}")
    return float(value)


def _check_stages(where: str, value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, list | tuple | set | frozenset):
        raise ValueError(f"{where} must be a list of stage names, not {value!r}")
    for stage in value:
        try:
            check_stage(stage, None)
        except InvalidMetadataError as exc:
            raise ValueError(f"{where}: {exc}") from None
    return list(value)


def _check_cache_size(where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{where} must be a whole number >= 0, not {value!r}")
    return value


def _check_bool(where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{where} must be true or false, not {value!r}")
    return value


#: Each key a model's dict may hold: the ``ModelRegistry`` argument it sets, the app-wide config key
#: it defaults to (None: no default), and its check.
SETTINGS: dict[str, tuple[str, str | None, Callable[[str, Any], Any]]] = {
    "root": ("root", None, _check_root),
    "storage_options": ("storage_options", None, _check_options),
    "refresh_interval": ("refresh_interval", "MODEL_REGISTRY_REFRESH_INTERVAL", _check_interval),
    "stages": ("allowed_stages", "MODEL_REGISTRY_STAGES", _check_stages),
    "model_cache_size": ("model_cache_size", "MODEL_REGISTRY_MODEL_CACHE_SIZE", _check_cache_size),
    "watch": ("watch", "MODEL_REGISTRY_WATCH", _check_bool),
}


def check_name(name: Any) -> str:
    """``name`` if it can name a model (and a URL segment), else a ``ValueError`` saying why."""
    where = f"{CONFIG_KEY}: model name {name!r}"
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"{where} must be a lowercase letter followed by up to 63 of a-z, 0-9, '_' and '-'"
        )
    if name in RESERVED_NAMES:
        raise ValueError(f"{where} is a word of the API's own ({', '.join(sorted(RESERVED_NAMES))})")
    return name


def parse_models(value: Any) -> dict[str, dict[str, Any]]:
    """The checked settings of each named model: ``{name: {"root": …, "stages": …}}``.

    ``value`` is the config value: None, a mapping, or its JSON text (from the environment).
    """
    if value is None:
        return {}
    if isinstance(value, str | bytes):
        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError as exc:
            raise ValueError(f"{CONFIG_KEY} is not valid JSON: {exc}") from None
    if not isinstance(value, Mapping):
        raise ValueError(f"{CONFIG_KEY} must map model names to roots or dicts, not {type(value).__name__}")
    models = {}
    for name, spec in value.items():
        where = f"{CONFIG_KEY}[{check_name(name)!r}]"
        if not isinstance(spec, Mapping):
            spec = {"root": spec}
        elif "root" not in spec:
            raise ValueError(f"{where} needs a 'root'")
        unknown = sorted(map(repr, set(spec) - set(SETTINGS)))
        if unknown:
            raise ValueError(f"{where}: unknown key {', '.join(unknown)} (known: {', '.join(SETTINGS)})")
        models[name] = {key: SETTINGS[key][2](f"{where}[{key!r}]", item) for key, item in spec.items()}
    return models


def open_registries(config: Mapping[str, Any]) -> Mapping[str, ModelRegistry]:
    """A read-only mapping name → :class:`ModelRegistry` of the app's named models."""
    value = config.get(CONFIG_KEY)
    if value is None:
        value = os.environ.get(CONFIG_KEY)
    registries = {}
    for name, settings in parse_models(value).items():
        kwargs = {}
        for key, (argument, app_wide, _) in SETTINGS.items():
            if key in settings:
                kwargs[argument] = settings[key]
            elif app_wide is not None and config.get(app_wide) is not None:
                kwargs[argument] = config[app_wide]
        registries[name] = ModelRegistry(**kwargs)
    return MappingProxyType(registries)
