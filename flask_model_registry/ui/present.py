"""What the console shows of a version: rows of the registry table, human times and sizes, scalar
metrics, flags, and the flattened metadata the diff page compares."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ..registry import Entry, Snapshot
from ..trail import CANARY

#: The most metric columns the registry table shows (the most common names first).
MAX_METRIC_COLUMNS = 12
SHA_PREFIX = 12
_MISSING = object()


def metadata_etag(metadata: Mapping[str, Any]) -> str:
    """A fingerprint of a version's metadata: forms carry it, and a write refuses a changed one."""
    canonical = json.dumps(metadata, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.blake2b(canonical.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def scalar_metrics(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """The number, string and boolean values of a top-level ``metrics`` object."""
    metrics = metadata.get("metrics") if metadata is not None else None
    if not isinstance(metrics, dict):
        return {}
    return {k: v for k, v in metrics.items() if isinstance(v, (str, int, float, bool))}


def flags(metadata: Mapping[str, Any] | None) -> list[tuple[str, Any]]:
    """Boolean flags that are set (``canary``), and the canary weight when it is a number."""
    if metadata is None:
        return []
    found = [(k, v) for k, v in metadata.items() if v is True or (k == CANARY and _is_weight(v))]
    return sorted(found)


def boolean_keys(metadata: Mapping[str, Any]) -> list[str]:
    """Every top-level key holding a boolean (true or false), and ``canary`` whatever it holds."""
    return sorted(k for k, v in metadata.items() if isinstance(v, bool) or k == CANARY)


def _is_weight(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 1


def metric_columns(snapshot: Snapshot) -> tuple[str, ...]:
    """The metric names the registry table has columns for: the most common ones, then by name."""

    def compute() -> tuple[str, ...]:
        counts = Counter(name for entry in snapshot.entries for name in scalar_metrics(entry.metadata))
        ranked = sorted(counts, key=lambda name: (-counts[name], name))[:MAX_METRIC_COLUMNS]
        return tuple(sorted(ranked))

    return snapshot.memo(("ui", "metric-columns"), compute)


def stage_names(snapshot: Snapshot) -> list[str]:
    """Every stage some version is in (string stages only), sorted."""
    return snapshot.memo(("ui", "stages"), lambda: sorted(s for s in snapshot.stages if isinstance(s, str)))


def in_stage(snapshot: Snapshot, stage: str) -> tuple[Entry, ...]:
    """The entries of one stage, ascending (computed once per registry state and known stage)."""
    if stage not in snapshot.stages:  # no memo entry per made-up stage name
        return ()
    return snapshot.memo(
        ("ui", "in-stage", stage), lambda: tuple(e for e in snapshot.entries if e.stage == stage)
    )


def human_size(size: object) -> str:
    """``1.2 MB`` for a byte count; ``-`` for anything else."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return "-"
    if size < 1000:
        return f"{size} B"
    value = size / 1000
    for unit in ("kB", "MB", "GB"):
        if value < 1000:
            return f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def parse_time(text: object) -> datetime | None:
    """An ISO 8601 time as an aware datetime (UTC when it names no zone), or None."""
    if not isinstance(text, str):
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def human_time(text: object, now: datetime) -> str:
    """``5 min ago``, ``3 h ago``, ``2 days ago`` for recent times, else the UTC date."""
    when = parse_time(text)
    if when is None:
        return str(text) if text is not None else "-"
    seconds = (now - when).total_seconds()
    if seconds < 0:
        return when.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    if seconds < 60:
        return "just now"
    for limit, unit, size in ((3600, "min", 60), (86400, "h", 3600), (86400 * 30, "days", 86400)):
        if seconds < limit:
            return f"{int(seconds // size)} {unit} ago"
    return when.astimezone(timezone.utc).strftime("%Y-%m-%d")


@dataclass(frozen=True)
class Row:
    """One version in the registry table."""

    version: str
    error: str | None
    stage: object
    flags: list[tuple[str, Any]]
    created: str | None
    size: str
    sha256: str | None
    metrics: dict[str, Any]
    prerelease: bool


def row(entry: Entry) -> Row:
    """The registry-table row of a version (a broken one has its error and nothing else)."""
    metadata = entry.metadata
    if metadata is None:
        return Row(entry.version, entry.error, None, [], None, "-", None, {}, entry.key[3] == 0)
    artifact = metadata.get("artifact") if isinstance(metadata.get("artifact"), dict) else {}
    sha = artifact.get("sha256")
    created = metadata.get("created_at")
    return Row(
        version=entry.version,
        error=None,
        stage=metadata.get("stage"),
        flags=flags(metadata),
        created=created if isinstance(created, str) else None,
        size=human_size(artifact.get("size")),
        sha256=sha if isinstance(sha, str) else None,
        metrics=scalar_metrics(metadata),
        prerelease=entry.key[3] == 0,
    )


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested objects as dotted paths (``metrics.auc``); arrays and scalars are leaves."""
    if isinstance(value, dict) and (value or not prefix):
        found: dict[str, Any] = {}
        for key, item in value.items():
            found.update(flatten(item, f"{prefix}{key}" if not prefix else f"{prefix}.{key}"))
        return found
    return {prefix: value}


@dataclass(frozen=True)
class DiffLine:
    """One metadata path in the diff: its value on each side (absent: ``None`` with ``has_*`` False)."""

    path: str
    left: str | None
    right: str | None
    changed: bool


def diff(left: Mapping[str, Any], right: Mapping[str, Any]) -> list[DiffLine]:
    """Every path of either side's metadata, sorted, its values shown as JSON, changed ones marked."""
    flat_left, flat_right = flatten(dict(left)), flatten(dict(right))
    lines = []
    for path in sorted({*flat_left, *flat_right}):
        a, b = flat_left.get(path, _MISSING), flat_right.get(path, _MISSING)
        shown_a = None if a is _MISSING else json.dumps(a, ensure_ascii=False)
        shown_b = None if b is _MISSING else json.dumps(b, ensure_ascii=False)
        lines.append(DiffLine(path, shown_a, shown_b, shown_a != shown_b))
    return lines
