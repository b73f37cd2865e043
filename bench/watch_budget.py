"""Warm reads of a registry of 20,000 versions whose watches are capped: as flat as watching all.

A registry watches at most :func:`watch_budget` version folders; the rest are checked with ``stat``
once a second (or once per ten rescans' time). The figures are a warm ``get_latest_version()``
averaged over three seconds of back-to-back calls (so the periodic checks are included), with the
default budget, against the same with a budget that covers every folder (one watch per version,
the old way, which the eighth process on a host could not get) and against ``watch=False``.

Run: ``python bench/watch_budget.py`` (about a minute; the first run also builds the registry).
"""

from __future__ import annotations

import time
from pathlib import Path

from _common import Row, Target, cached_dir, print_header, print_table

from flask_model_registry import ModelRegistry
from flask_model_registry.storage.local import LocalStorage
from flask_model_registry.storage.watch import watch_budget

N = 20_000


def many_versions() -> Path:
    def build(root: Path) -> None:
        for n in range(N):
            folder = root / "versions" / f"1.{n // 1000}.{n % 1000}"
            folder.mkdir(parents=True)
            (folder / "metadata.json").write_text('{"stage": "prod"}' if n % 7 == 0 else "{}")

    return cached_dir(f"versions-{N}", build)


def warm_call(registry: ModelRegistry, seconds: float = 3.0) -> float:
    """Seconds per warm ``get_latest_version()`` over ``seconds`` of calls."""
    registry.get_latest_version()
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(1000):
            registry.get_latest_version("prod")
        calls += 1000
    return (time.perf_counter() - started) / calls


def main() -> None:
    root = many_versions()
    budget = watch_budget()
    print_header(
        f"warm get_latest_version() on {N:,} versions, {budget:,} of them watched",
        ["each figure: the mean over 3 s of back-to-back calls, periodic stat checks included"],
    )
    capped = ModelRegistry(root)
    every = ModelRegistry(root, storage=LocalStorage(str(root), max_watches=N))
    polling = ModelRegistry(root, watch=False)
    figures = {name: warm_call(registry) for name, registry in [("capped", capped), ("every", every)]}
    figures["stat"] = warm_call(polling, 1.0)
    assert capped.storage.watcher.watches <= budget + 2, capped.storage.watcher.watches
    for registry in (capped, every, polling):
        registry.close()
    print_table(
        [
            Row(
                f"{budget:,} watches, the rest polled",
                figures["capped"],
                f"{N:,} watches",
                figures["every"],
                Target("≤2x watching every folder", 2.0),
            ),
            Row(f"{budget:,} watches, the rest polled", figures["capped"], "watch=False", figures["stat"]),
        ]
    )


if __name__ == "__main__":
    main()
