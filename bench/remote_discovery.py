"""Remote discovery: 1,000 versions on S3 (moto on 127.0.0.1), each figure next to the naive way.

The naive way reads every ``metadata.json`` with a fresh fsspec filesystem at each refresh: one
paged listing, then one GET after the other. The registry lists once and fetches only the metadata
whose ETag changed since its last refresh, a few at a time.

Run: ``python bench/remote_discovery.py`` (about a minute). moto runs in a process of its own, so
client and server do not share one interpreter. moto spends milliseconds of Python on each request
while the round trip to it is far below one: concurrent GETs gain little against it, where against
a real store (tens of milliseconds a round trip) they gain nearly their number.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from operator import itemgetter
from typing import Any

import cloudpickle
import semver
from _common import REPO, Row, Target, print_header, print_table, user_metadata, version_name

from flask_model_registry import ModelRegistry

sys.path.insert(0, str(REPO / "tests"))
from servers import Store, moto_s3

N = 1_000
ROUNDS = 3


def populate(store: Store, url: str) -> None:
    """``N`` versions written straight into the bucket: what ``save_model`` would leave there."""
    fs = store.filesystem()
    root = fs._strip_protocol(url)
    objects = {}
    for i in range(N):
        version = version_name(i)
        model = cloudpickle.dumps({"weights": [0.4 + i / 1e4, -1.3, 2.05]})
        artifact = {"file": "model.pkl", "sha256": hashlib.sha256(model).hexdigest(), "size": len(model)}
        metadata = {"version": version, "created_at": "2026-01-01T00:00:00.000Z", "artifact": artifact}
        objects[f"{root}/versions/{version}/model.pkl"] = model
        objects[f"{root}/versions/{version}/metadata.json"] = json.dumps(
            {**metadata, **user_metadata(i)}
        ).encode()
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
    items.sort(key=itemgetter(0))
    return items


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def counting_gets(registry: ModelRegistry) -> list[str]:
    """Every GET of ``registry``'s storage from now on (it wraps the storage's one fetch method)."""
    gets: list[str] = []
    storage: Any = registry.storage
    fetch = storage.fetch

    def counted(path: str) -> Any:
        gets.append(path)
        return fetch(path)

    storage.fetch = counted
    return gets


def main() -> None:
    print_header(
        f"remote discovery: {N:,} versions on S3 (moto, 127.0.0.1)",
        [
            f"median of {ROUNDS} rounds; the naive way re-reads every metadata.json at each refresh",
            "cold: a fresh ModelRegistry, its first listing with all metadata",
            "refresh: refresh_interval=0, so every read lists the bucket again",
        ],
    )
    with moto_s3(own_process=True) as store:
        url = store.url(f"bench-{uuid.uuid4().hex}")
        started = time.perf_counter()
        populate(store, url)
        print(f"(wrote {2 * N:,} objects in {time.perf_counter() - started:.1f} s)\n")
        options = store.storage_options

        reader = ModelRegistry(url, storage_options=options, refresh_interval=0)
        writer = ModelRegistry(url, storage_options=options)
        gets = counting_gets(reader)
        assert len(reader.list_versions()) == N == len(naive_listing(store, url))
        counts = {"cold": len(gets)}

        samples: dict[str, list[float]] = {"cold": [], "naive": [], "unchanged": [], "one changed": []}
        for round_ in range(ROUNDS):
            samples["cold"].append(timed(lambda: ModelRegistry(url, storage_options=options).snapshot()))
            samples["naive"].append(timed(lambda: naive_listing(store, url)))
            gets.clear()
            samples["unchanged"].append(timed(reader.snapshot))
            counts["unchanged"] = max(counts.get("unchanged", 0), len(gets))
            promoted = version_name(10 * round_ + 1)
            writer.set_stage(promoted, f"round-{round_}")
            gets.clear()
            samples["one changed"].append(timed(reader.snapshot))
            counts["one changed"] = max(counts.get("one changed", 0), len(gets))
            assert reader.get_latest_version(stage=f"round-{round_}") == promoted

    median = {name: statistics.median(values) for name, values in samples.items()}
    naive = median["naive"]
    print_table(
        [
            Row(
                "cold listing with metadata",
                median["cold"],
                "naive",
                naive,
                Target("cold listing no slower than the naive way", 1.0),
            ),
            Row(
                "refresh, nothing changed",
                median["unchanged"],
                "naive",
                naive,
                Target("refresh with no change ≤ 1/5 of the naive way (moto's listing is the floor)", 0.2),
            ),
            Row(
                "refresh, one version changed",
                median["one changed"],
                "naive",
                naive,
                Target("refresh after one change ≤ 1/5 of the naive way", 0.2),
            ),
        ]
    )
    print(
        f"\nmetadata GETs per refresh: cold {counts['cold']:,}, nothing changed {counts['unchanged']},"
        f" one changed {counts['one changed']}; the naive way {N:,} every time."
        f" Each also lists the bucket once ({2 * N:,} objects: {-(-2 * N // 1000)} pages)."
    )


if __name__ == "__main__":
    main()
