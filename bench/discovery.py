"""Discovery: a cold listing against its floor and a naive loop, and warm reads against their floors.

Run: ``python bench/discovery.py`` (about half a minute; the first run also builds the registries).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from _common import (
    MIB,
    Row,
    Target,
    floor_listing,
    interleaved,
    naive_listing,
    print_header,
    print_table,
    saved_registry,
    written_registry,
)

from flask_model_registry import ModelRegistry, versioning

N = 2_000


def cold_snapshot(root: Path, watch: bool = True) -> object:
    """A fresh instance's first snapshot: every version and its metadata, sorted.

    Returns the instance too, so that its teardown happens after the clock stops. The process-wide
    cache of parsed version names is emptied first, as in a newly started process.
    """
    versioning._sort_key.cache_clear()
    registry = ModelRegistry(root, watch=watch)
    return registry, registry.snapshot()


def cold_public_listing(root: Path, watch: bool = True) -> object:
    """A fresh instance, then the public calls: ``list_versions()`` and ``get_metadata`` of each."""
    versioning._sort_key.cache_clear()
    registry = ModelRegistry(root, watch=watch)
    return registry, [registry.get_metadata(v) for v in registry.list_versions()]


def read_everything(registry: ModelRegistry) -> object:
    """The seed's own pattern on a warm instance: ``list_versions()``, then ``get_metadata`` of each."""
    return [registry.get_metadata(v) for v in registry.list_versions()]


def second_call(root: Path, repeats: int = 7) -> float:
    """Median seconds of a fresh instance's second ``get_latest_version()`` (its first is the scan)."""
    times = []
    for _ in range(repeats):
        registry = ModelRegistry(root)
        registry.get_latest_version()
        start = time.perf_counter()
        registry.get_latest_version()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cold_timings(root: Path) -> dict[str, float]:
    """Median seconds of the floor, the naive loop and the package's two cold listings."""
    return interleaved(
        {
            "floor": lambda: floor_listing(root),
            "naive": lambda: naive_listing(root),
            "snapshot": lambda: cold_snapshot(root),
            "public": lambda: cold_public_listing(root),
            "unwatched": lambda: cold_snapshot(root, watch=False),
            "public unwatched": lambda: cold_public_listing(root, watch=False),
        },
        rounds=11,
    )


def cold_rows(cold: dict[str, float]) -> list[Row]:
    floor = "floor: scandir + read/loads + int sort"
    return [
        Row(
            "cold snapshot()",
            cold["snapshot"],
            floor,
            cold["floor"],
            Target("cold snapshot() of 2,000 versions ≤1.5x the floor", 1.5),
        ),
        Row(
            "cold snapshot()",
            cold["snapshot"],
            "naive: Version.parse + read/loads + sort",
            cold["naive"],
            Target("cold snapshot() well below the naive loop (<1x)", 1.0),
        ),
        Row("cold list_versions()+get_metadata() each", cold["public"], floor, cold["floor"]),
        Row(
            "cold list_versions()+get_metadata() each, watch=False",
            cold["public unwatched"],
            floor,
            cold["floor"],
            Target("cold listing + get_metadata of each, watch=False, ≤1.5x the floor", 1.5),
        ),
        Row("cold snapshot(), watch=False (no inotify)", cold["unwatched"], floor, cold["floor"]),
        Row("naive loop", cold["naive"], floor, cold["floor"]),
    ]


def warm_rows(root: Path, cold: float) -> list[Row]:
    watched = ModelRegistry(root)
    polled = ModelRegistry(root, watch=False)
    assert watched.storage.watching, "inotify is not available: the warm figures would mean nothing"
    storage = watched.storage
    model = watched.get_latest_model()
    cache = {("1.0.0", "model.pkl", "0" * 64): model}

    def lookup_and_check() -> object:
        storage.unchanged()
        return cache["1.0.0", "model.pkl", "0" * 64]

    micro = interleaved(
        {
            "version": watched.get_latest_version,
            "model": watched.get_latest_model,
            "baseline": lookup_and_check,
            "check": storage.unchanged,
        },
        rounds=15,
        number=20_000,
    )
    polled_version = interleaved({"polled": polled.get_latest_version}, rounds=5, number=20)["polled"]
    pattern = interleaved(
        {"watched": lambda: read_everything(watched), "polled": lambda: read_everything(polled)}, rounds=9
    )
    return [
        Row(
            "warm get_latest_version()",
            micro["version"],
            "cold snapshot()",
            cold,
            Target("warm get_latest_version() ≥100x faster than the cold listing (≤1/100)", 0.01),
        ),
        Row(
            "warm get_latest_model()",
            micro["model"],
            "dict lookup + unchanged()",
            micro["baseline"],
            Target("warm get_latest_model() no slower than a dict lookup + the freshness check", 1.0),
        ),
        Row("warm get_latest_version()", micro["version"], "unchanged() alone", micro["check"]),
        Row("warm get_latest_version(), watch=False", polled_version, "cold snapshot()", cold),
        Row(
            "list_versions()+get_metadata() each, watch=False",
            pattern["polled"],
            "the same with inotify",
            pattern["watched"],
            Target("the seed's pattern without inotify ≤2x the same with inotify", 2.0),
        ),
        Row("2nd get_latest_version() of a fresh instance", second_call(root), "cold snapshot()", cold),
    ]


def artefact_rows() -> list[Row]:
    small = written_registry(N, 16)
    large = written_registry(N, 64 * MIB)
    cold = interleaved(
        {"small": lambda: cold_snapshot(small), "large": lambda: cold_snapshot(large)}, rounds=21
    )
    return [
        Row(
            "cold snapshot(), 64 MiB artefacts",
            cold["large"],
            "same, 16-byte artefacts",
            cold["small"],
            Target("listing cost independent of artefact size (≤1.1x)", 1.1),
        )
    ]


def main() -> None:
    root = saved_registry(N)
    print_header(
        f"discovery: {N:,} versions on local disk (median of 11-21 interleaved rounds)",
        [
            "cold = a fresh ModelRegistry(root) per repeat, in this process; nothing is dropped from"
            " the OS page cache, so cold means cold caches of the package, not of the kernel",
            "warm = the same instance asked again with nothing changed (inotify on, unless watch=False)",
            "artefact size: two registries of 2,000 versions written directly in the layout, model.pkl"
            " of 16 bytes vs 64 MiB sparse (truncate) files with the matching size and sha256",
        ],
    )
    cold = cold_timings(root)
    print_table([*cold_rows(cold), *warm_rows(root, cold["snapshot"]), *artefact_rows()])


if __name__ == "__main__":
    main()
