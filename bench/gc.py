"""``gc --dry-run`` on S3 (moto on 127.0.0.1): the requests it makes, counted by the proxy the fleet
tests use, beside what a cold reader pays and what a naive gc (a listing, then one GET per version's
metadata) would.

The registry is written straight into the bucket, as ``save_model`` would leave it (no audit trail:
hand-made, as the seed registries were), then read once so that its manifest exists. ``gc`` runs in
a fresh ``ModelRegistry``, as ``flask models gc`` does in a process of its own: its one listing of
``versions/`` serves both its refresh (confirming the manifest) and its search for leftovers, and the
metadata comes from the manifest; the audit trail costs its listings (pending events, the
registry-wide trail, the folders of earlier releases' events), not one request per version.

Run: ``python bench/gc.py [1000 10000]`` (10,000 versions take a few minutes to write).
"""

from __future__ import annotations

import sys
from collections import Counter
from datetime import timedelta

from _common import REPO, Row, print_header, print_table
from remote_discovery import fmt, measured, populated_bucket

from flask_model_registry import ModelRegistry

sys.path.insert(0, str(REPO / "tests"))
from servers import Store


def naive_gc(store: Store, url: str) -> dict[str, bytes]:
    """What a gc without a manifest reads: a listing of ``versions/``, then every version's
    ``metadata.json`` (fetched concurrently, as s3fs batches them)."""
    fs = store.filesystem()
    paths = [p for p in fs.find(f"{fs._strip_protocol(url)}/versions") if p.endswith("/metadata.json")]
    return fs.cat(paths)


def run(n: int) -> None:
    with populated_bucket(n, "bench-gc") as (_, store, proxy, url):

        def fresh() -> ModelRegistry:
            return ModelRegistry(url, storage_options=store.storage_options)

        fresh().snapshot()  # the one slower refresh that writes the manifest
        result: dict[str, object] = {}

        def dry_run() -> None:
            result.update(fresh().gc(keep_last=3, older_than=timedelta(days=30), dry_run=True))

        figures = {
            "cold reader": measured(proxy, lambda: fresh().snapshot()),
            "naive gc": measured(proxy, lambda: naive_gc(store, url)),
            "gc --dry-run": measured(proxy, dry_run),
        }
    deleted = result["deleted"]
    assert isinstance(deleted, list)
    print(f"gc --keep-last 3 --older-than 30d --dry-run: would delete {len(deleted):,} versions")
    for what, (took, counts) in figures.items():
        print(f"  {what}: {fmt(counts)} in {took:.2f} s")
    total = {what: sum(counts.values()) for what, (_, counts) in figures.items()}
    gets = Counter(figures["gc --dry-run"][1])["GET"]
    print(f"  gc: {gets} GET (the manifest), no GET per version")
    print_table(
        [
            Row(
                "gc --dry-run requests",
                total["gc --dry-run"],
                "cold reader",
                total["cold reader"],
                unit="req",
            ),
            Row("gc --dry-run requests", total["gc --dry-run"], "naive gc", total["naive gc"], unit="req"),
            Row("gc --dry-run time", figures["gc --dry-run"][0], "naive gc", figures["naive gc"][0]),
        ]
    )


def main() -> None:
    sizes = [int(arg) for arg in sys.argv[1:]] or [1_000, 10_000]
    print_header(
        "gc --dry-run on S3 (moto, 127.0.0.1, through a counting proxy)",
        [
            "cold reader: a fresh ModelRegistry's first snapshot (the manifest, confirmed by one listing)",
            "naive gc: one listing of versions/, then one GET per version's metadata.json (concurrent)",
            "LIST counts pages of 1,000 keys (two objects per version)",
        ],
    )
    for n in sizes:
        run(n)


if __name__ == "__main__":
    main()
