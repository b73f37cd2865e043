"""Remote discovery on S3 (moto on 127.0.0.1): requests and time per refresh, three schemes side by side.

- naive: a fresh fsspec filesystem lists ``versions/`` and GETs every ``metadata.json``, each time;
- listing (the scheme before the manifest): each refresh lists ``versions/`` and GETs the metadata
  whose ETag changed; a cold start GETs every version;
- manifest (this package): an idle refresh is one conditional GET of ``manifest.json`` (304); after
  a write, that GET brings the changes; a cold start reads the manifest and confirms it with one
  listing; a full listing runs every ``full_refresh`` seconds (not in the figures below).

Requests are counted by a proxy in front of moto (every scheme goes through it, so each figure
includes the same proxy hop). Run: ``python bench/remote_discovery.py [1000 10000]`` (1,000 takes a
minute or two; 10,000 several minutes, most of it writing the objects and the GETs of the naive and
listing cold starts). moto runs in a process of its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import cloudpickle
import semver
from _common import REPO, Row, print_header, print_table, user_metadata, version_name

from flask_model_registry import ModelRegistry
from flask_model_registry.storage.base import Storage
from flask_model_registry.storage.remote import FsspecStorage

sys.path.insert(0, str(REPO / "tests"))
from servers import Store, StoreProxy, moto_s3, proxied

ROUNDS = 3
#: S3's price per 1,000 requests (us-east-1, Standard): LIST (class A) and GET (class B).
PRICE = {"LIST": 0.005, "GET": 0.0004}
REFRESH_INTERVAL = 2.0


class ListingStorage(FsspecStorage):
    """The scheme before the manifest: every refresh lists, then GETs what changed."""

    refresh = Storage.refresh


def populate(store: Store, url: str, n: int) -> None:
    """``n`` versions written straight into the bucket: what ``save_model`` would leave there."""
    fs = store.filesystem()
    root = fs._strip_protocol(url)
    objects = {}
    for i in range(n):
        version = version_name(i)
        model = cloudpickle.dumps({"weights": [0.4 + i / 1e4, -1.3, 2.05]})
        artifact = {"file": "model.pkl", "sha256": hashlib.sha256(model).hexdigest(), "size": len(model)}
        metadata = {"version": version, "created_at": "2026-01-01T00:00:00.000Z", "artifact": artifact}
        objects[f"{root}/versions/{version}/model.pkl"] = model
        document = {**metadata, **user_metadata(i)}
        objects[f"{root}/versions/{version}/metadata.json"] = json.dumps(document).encode()
    fs.pipe(objects)


def naive_listing(store: Store, url: str) -> list[tuple[Any, str, dict[str, Any]]]:
    """The naive way: list ``versions/``, then GET and parse each ``<version>/metadata.json``."""
    fs = store.filesystem()
    items = []
    for path in fs.find(f"{fs._strip_protocol(url)}/versions"):
        _, name, file = path.rsplit("/", 2)
        if file != "metadata.json":
            continue
        try:
            version = semver.Version.parse(name)
        except ValueError:
            continue
        items.append((version, name, json.loads(fs.cat_file(path))))
    items.sort(key=lambda item: item[0])
    return items


def measured(proxy: StoreProxy, action: Callable[[], object]) -> tuple[float, Counter[str]]:
    """Seconds ``action`` took and the requests it made, by kind."""
    proxy.reset()
    start = time.perf_counter()
    action()
    took = time.perf_counter() - start
    return took, Counter(proxy.kinds())


def fmt(counts: Counter[str]) -> str:
    return " + ".join(f"{n:,} {kind}" for kind, n in sorted(counts.items())) or "none"


def dollars_per_day(counts: Counter[str]) -> float:
    """What one replica pays a day refreshing every :data:`REFRESH_INTERVAL` seconds."""
    per_refresh = sum(PRICE.get(kind, PRICE["GET"]) * n for kind, n in counts.items()) / 1000
    return per_refresh * 86_400 / REFRESH_INTERVAL


@contextlib.contextmanager
def populated_bucket(n: int, name: str) -> Iterator[tuple[Store, Store, StoreProxy, str]]:
    """moto in a process of its own, the counting proxy in front of it, and ``n`` versions written
    under a fresh prefix named after ``name``: the store, the store through the proxy, the proxy and
    the registry's URL."""
    with moto_s3(own_process=True) as direct, proxied(direct) as (store, proxy):
        url = direct.url(f"{name}-{uuid.uuid4().hex}")
        started = time.perf_counter()
        populate(direct, url, n)
        print(f"\n{n:,} versions ({2 * n:,} objects written in {time.perf_counter() - started:.1f} s)")
        yield direct, store, proxy, url


def run(n: int) -> None:
    with populated_bucket(n, "bench") as (direct, store, proxy, url):
        options = store.storage_options

        def manifest(**kwargs: Any) -> ModelRegistry:
            return ModelRegistry(url, storage_options=options, refresh_interval=0, **kwargs)

        def listing() -> ModelRegistry:
            storage = ListingStorage(url, storage_options=options, refresh_interval=0)
            return ModelRegistry(url, storage=storage)

        results: dict[str, tuple[float, Counter[str]]] = {}
        results["naive cold"] = measured(proxy, lambda: naive_listing(store, url))
        results["listing cold"] = measured(proxy, lambda: listing().snapshot())
        results["manifest cold, none yet"] = measured(proxy, lambda: manifest().snapshot())
        colds = [measured(proxy, lambda: manifest().snapshot()) for _ in range(ROUNDS)]
        results["manifest cold"] = (statistics.median(t for t, _ in colds), colds[-1][1])

        readers = {"listing": listing(), "manifest": manifest()}
        for reader in readers.values():
            reader.snapshot()
        writer = ModelRegistry(url, storage_options=direct.storage_options)
        for name, reader in readers.items():
            idle = [measured(proxy, reader.snapshot) for _ in range(ROUNDS)]
            results[f"{name} idle"] = (statistics.median(t for t, _ in idle), idle[-1][1])
        for round_ in range(ROUNDS):
            writer.set_stage(version_name(10 * round_ + 1), f"round-{round_}")
            for name, reader in readers.items():
                took, counts = measured(proxy, reader.snapshot)
                assert reader.get_latest_version(stage=f"round-{round_}") == version_name(10 * round_ + 1)
                previous = results.get(f"{name} one change", (0.0, counts))
                results[f"{name} one change"] = (max(previous[0], took), counts)

    naive_time = results["naive cold"][0]
    print_table(
        [
            Row(f"{what}: {fmt(counts)}", took, "naive cold", naive_time)
            for what, (took, counts) in results.items()
        ]
    )
    pages = -(-(2 * n) // 1000)
    full = 1440 * pages * PRICE["LIST"] / 1000  # one full listing a minute (full_refresh=60)
    print(
        f"\nper replica per day at refresh_interval={REFRESH_INTERVAL:g} s, S3 prices"
        f" (LIST ${PRICE['LIST']}/1,000, GET ${PRICE['GET']}/1,000):"
        f" listing ${dollars_per_day(results['listing idle'][1]):.2f};"
        f" manifest ${dollars_per_day(results['manifest idle'][1]):.3f} + ${full:.3f} for the full"
        f" listings every 60 s ({pages} pages each)"
    )


def main() -> None:
    sizes = [int(arg) for arg in sys.argv[1:]] or [1_000, 10_000]
    print_header(
        "remote discovery on S3 (moto, 127.0.0.1, through a counting proxy)",
        [
            "cold: a fresh ModelRegistry, its first snapshot with all metadata (manifest: median of"
            f" {ROUNDS}; 'none yet' is the one slower refresh that writes the manifest)",
            "idle: a refresh in which nothing changed; one change: after a promotion elsewhere",
            "ratio: against the naive cold listing of the same registry",
        ],
    )
    for n in sizes:
        run(n)


if __name__ == "__main__":
    main()
