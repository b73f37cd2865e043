"""Strict SemVer 2.0.0 validation and a precomputed sort key, fast enough for thousands of versions.

``semver.Version.parse`` builds an object per name; listing only needs "is this a version directory"
and "where does it sort", so both come from one compiled regular expression. The tests check that
this agrees with the ``semver`` package on validity and precedence.
"""

from __future__ import annotations

import functools
import re

from .errors import InvalidVersionError

#: The longest version string accepted: a version is also a directory or object name.
MAX_VERSION_LENGTH = 128

_NUM = r"0|[1-9][0-9]*"
_PRE_ID = r"0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*"
_SEMVER = re.compile(
    rf"(?P<major>{_NUM})\.(?P<minor>{_NUM})\.(?P<patch>{_NUM})"
    rf"(?:-(?P<pre>(?:{_PRE_ID})(?:\.(?:{_PRE_ID}))*))?"
    r"(?:\+(?P<build>[0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?",
    re.ASCII,
)

PreKey = tuple[tuple[int, int | str], ...]
SortKey = tuple[int, int, int, int, PreKey, str]


def sort_key(version: str) -> SortKey | None:
    """The SemVer precedence key of ``version`` (build metadata breaks ties), or None if invalid."""
    if len(version) > MAX_VERSION_LENGTH:
        return None
    return _sort_key(version)


@functools.lru_cache(maxsize=1 << 15)  # a listing asks twice per name (storage, then registry)
def _sort_key(version: str) -> SortKey | None:
    match = _SEMVER.fullmatch(version)
    if match is None:
        return None
    major, minor, patch, pre, build = match.group("major", "minor", "patch", "pre", "build")
    if pre is None:
        return int(major), int(minor), int(patch), 1, (), build or ""
    pre_key = tuple((0, int(part)) if part.isdigit() else (1, part) for part in pre.split("."))
    return int(major), int(minor), int(patch), 0, pre_key, build or ""


def is_prerelease(key: SortKey) -> bool:
    """Whether the version behind ``key`` has a prerelease part (``1.0.0-rc.1``)."""
    return key[3] == 0


def check_version(version: object) -> str:
    """Return ``version`` if it is a strict SemVer string, else raise :class:`InvalidVersionError`."""
    if not isinstance(version, str):
        raise InvalidVersionError(f"a version must be a string, not {type(version).__name__}")
    if sort_key(version) is None:
        shown = version if len(version) <= 64 else version[:61] + "..."
        raise InvalidVersionError(
            f"{shown!r} is not a valid version: use strict SemVer 2.0.0 such as '1.2.0' or '2.0.0-rc.1'"
        )
    return version
