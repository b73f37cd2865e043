"""What may go into ``metadata.json``: reserved keys, stage names, limits, and JSON merge patch.

The registry owns ``version``, ``created_at`` and ``artifact``; users own every other key. Neither
side silently overwrites the other, so a clash is an :class:`InvalidMetadataError`.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable, Collection, Mapping
from typing import Any

from .errors import InvalidMetadataError

#: Keys the registry writes when it saves; a user may neither set nor change them.
RESERVED_KEYS = frozenset({"version", "created_at", "artifact"})
#: The largest ``metadata.json`` the registry writes, in bytes.
MAX_METADATA_BYTES = 256 * 1024
#: The most bytes of a ``metadata.json`` (or an audit event) that are read, by every storage: a
#: larger file is read no further than this + 1 bytes, and listed as an ``error`` entry.
MAX_METADATA_READ_BYTES = 1 << 20
#: The longest metadata key accepted.
MAX_KEY_LENGTH = 128
#: The deepest nesting of objects and arrays accepted in user metadata.
MAX_DEPTH = 32
#: The deepest nesting accepted in a ``metadata.json`` that is read (hand-made ones included):
#: deeper ones are an ``error`` entry, so no later step (an answer, a copy) runs out of stack.
MAX_READ_DEPTH = 100
#: The most digits of an integer read from JSON, when Python itself sets no limit.
MAX_INT_DIGITS = 4300
_INT_BOUND = 10**MAX_INT_DIGITS
STAGE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", re.ASCII)
_KEY_PATTERN = re.compile(rf"[^\x00-\x1f\x7f]{{1,{MAX_KEY_LENGTH}}}")


def dumps(metadata: Mapping[str, Any]) -> bytes:
    """Serialise metadata as the registry stores it: UTF-8, indented, strict JSON (no NaN, no
    Infinity, no lone surrogate): what :func:`loads` reads back."""
    try:
        text = json.dumps(metadata, indent=2, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidMetadataError(f"metadata must be plain JSON: {exc}") from None
    try:
        data = (text + "\n").encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidMetadataError(
            "metadata must be valid Unicode: a lone surrogate (\\ud800-\\udfff) is not a character"
        ) from None
    if len(data) > MAX_METADATA_BYTES:
        raise InvalidMetadataError(
            f"metadata.json would be {len(data)} bytes; the limit is {MAX_METADATA_BYTES}"
        )
    return data


class _Refused(ValueError):
    """Why :func:`loads` refused a JSON document that Python's own parser would accept."""


def _refuse_constant(name: str) -> Any:
    raise _Refused(f"holds {name}, which JSON does not allow")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"holds a number that overflows to infinity ({text[:20]})")
    return value


def _bounded_int(text: str) -> int:
    limit = sys.get_int_max_str_digits() or MAX_INT_DIGITS
    if len(text.lstrip("-")) > limit:
        raise _Refused(f"holds an integer of {len(text)} digits (the limit is {limit})")
    return int(text)


def loads(data: bytes) -> Any:
    """Strict JSON, as every stored document is read: UTF-8 only; no ``NaN``, ``Infinity``, number
    that overflows to one, over-long integer or lone surrogate; nesting no deeper than
    :data:`MAX_READ_DEPTH`. Anything else raises a ``ValueError`` saying why, never another error."""
    try:
        text = data.decode("utf-8")
        value = json.loads(
            text, parse_constant=_refuse_constant, parse_float=_finite_float, parse_int=_bounded_int
        )
    except UnicodeDecodeError:
        raise ValueError("is not valid UTF-8") from None
    except _Refused as exc:
        raise ValueError(str(exc)) from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"is not valid JSON ({exc})") from None
    except RecursionError:
        raise ValueError("is nested too deeply to parse") from None
    except (ValueError, MemoryError) as exc:
        raise ValueError(f"cannot be parsed ({type(exc).__name__})") from None
    # Cheap checks first: a document with few brackets cannot be deep, one without an escape
    # cannot hold a lone surrogate (the UTF-8 decoder refuses encoded ones).
    if text.count("[") + text.count("{") > MAX_READ_DEPTH and _depth(value) > MAX_READ_DEPTH:
        raise ValueError(f"is nested deeper than {MAX_READ_DEPTH} levels")
    if "\\u" in text:
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("holds a lone surrogate (\\ud800-\\udfff), which is not a character") from None
    return value


def parse_metadata(data: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """A stored ``metadata.json`` as ``(metadata, None)``, or ``(None, why it cannot be used)``.

    Every read of metadata goes through here: whatever the bytes, this returns.
    """
    if len(data) > MAX_METADATA_READ_BYTES:
        return None, f"metadata.json is larger than the limit of {MAX_METADATA_READ_BYTES} bytes"
    try:
        value = loads(data)
    except ValueError as exc:
        return None, f"metadata.json {exc}"
    if not isinstance(value, dict):
        return None, f"metadata.json holds a JSON {type(value).__name__}, not an object"
    return value, None


def _depth(value: Any) -> int:
    """How deeply arrays and objects nest in ``value``, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def check_stage(stage: object, allowed: Collection[str] | None) -> str:
    """Return ``stage`` if it is a short name (and allowed, when a list is configured)."""
    if not isinstance(stage, str) or not STAGE_PATTERN.fullmatch(stage):
        raise InvalidMetadataError(
            f"stage {_short(stage)} is not valid: use up to 64 letters, digits, '.', '_' or '-'"
        )
    if allowed is not None and stage not in allowed:
        raise InvalidMetadataError(f"unknown stage {stage!r}; allowed stages: {', '.join(sorted(allowed))}")
    return stage


def _check_value(value: Any, depth: int) -> None:
    """A value JSON can carry as it is. Top-level keys follow the key rule (they are the names of
    flags and columns); keys of nested objects are the user's data: any string."""
    if depth > MAX_DEPTH:
        raise InvalidMetadataError(f"metadata is nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            if depth == 0:
                _check_key(key)
            elif not isinstance(key, str):
                raise InvalidMetadataError(f"metadata key {_short(key)} is not a string")
            _check_value(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_value(item, depth + 1)
    elif isinstance(value, float) and not math.isfinite(value):
        raise InvalidMetadataError("metadata values must be finite numbers (no NaN or Infinity)")
    elif type(value) is int and not -_INT_BOUND < value < _INT_BOUND:
        raise InvalidMetadataError(f"metadata integers must have at most {MAX_INT_DIGITS} digits")
    elif value is not None and not isinstance(value, (str, int, float, bool)):
        raise InvalidMetadataError(
            f"metadata values must be JSON (objects, arrays, strings, numbers, booleans, null),"
            f" not {type(value).__name__}"
        )


def _check_key(key: object) -> None:
    if not isinstance(key, str) or not _KEY_PATTERN.fullmatch(key):
        raise InvalidMetadataError(
            f"metadata key {_short(key)} is not valid: a string of 1 to {MAX_KEY_LENGTH}"
            " characters without control characters"
        )


def check_user_metadata(
    metadata: object, allowed_stages: Collection[str] | None, *, patch: bool = False
) -> dict[str, Any]:
    """Validate user metadata (or a merge patch of it) and return it as a dict."""
    what = "a metadata patch" if patch else "metadata"
    if not isinstance(metadata, Mapping):
        raise InvalidMetadataError(f"{what} must be a JSON object, not {type(metadata).__name__}")
    metadata = dict(metadata)
    clash = sorted(RESERVED_KEYS.intersection(metadata))
    if clash:
        raise InvalidMetadataError(
            f"{', '.join(clash)} {'is' if len(clash) == 1 else 'are'} written by the registry"
            " and cannot be set by users"
        )
    _check_value(metadata, 0)
    stage = metadata.get("stage")
    if stage is not None or (not patch and "stage" in metadata):
        check_stage(stage, allowed_stages)
    return metadata


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply a JSON merge patch (RFC 7396): objects merge, ``null`` removes a key."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def same_json(a: Any, b: Any) -> bool:
    """Whether two values are the same JSON (unlike ``==``, which has ``True == 1 == 1.0``)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def changed_keys(before: Mapping[str, Any], after: Mapping[str, Any]) -> tuple[dict, dict]:
    """The top-level keys that differ, as their values before and after (absent keys omitted)."""
    keys = [
        key
        for key in {**before, **after}
        if (key in before) != (key in after) or not same_json(before[key], after[key])
    ]
    return (
        {key: before[key] for key in keys if key in before},
        {key: after[key] for key in keys if key in after},
    )


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def copy_json(value: Any) -> Any:
    """A deep copy of parsed JSON (dicts, lists and immutables): several times faster than deepcopy."""
    if type(value) is dict:
        return {key: copy_json(item) for key, item in value.items()}
    if type(value) is list:
        return [copy_json(item) for item in value]
    return value


def holds(expected: Mapping[str, Any] | Callable[[dict[str, Any]], bool], current: dict[str, Any]) -> bool:
    """Whether ``current`` is what a conditional change expects: the metadata it was decided on,
    or a test of the current one (given a copy, so it cannot change what is written)."""
    if callable(expected):
        return bool(expected(copy_json(current)))
    return same_json(dict(expected), current)
