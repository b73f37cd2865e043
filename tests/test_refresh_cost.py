"""What a refresh costs on object storage, counted (not timed) by a proxy in front of each store.

An idle refresh is one small conditional request for the registry's manifest; a cold start reads the
manifest and confirms it with one listing; after a write elsewhere a refresh costs a few requests; a
full listing (for copies made by hand) runs every ``full_refresh`` seconds. The manifest is a cache:
damaged in any way, it costs one slower refresh and never a wrong answer. Same tests on S3 (moto),
Azure Blob (Azurite) and GCS (fake-gcs-server).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import cloudpickle
import pytest
import servers
from helpers_procs import Children, on_store, publish_each

from flask_model_registry import ModelRegistry
from flask_model_registry.storage.manifest import MIN_READ_LIMIT
from flask_model_registry.storage.objects import objects_for

#: Objects per listing page: S3 and GCS answer 1,000 keys a page, Azure 5,000.
PAGE = {"s3": 1000, "az": 5000, "gs": 1000}
#: Requests an idle refresh may make: a conditional GET (S3, Azure: 304); GCS: the object's metadata.
IDLE = 1
MANIFEST = "manifest.json"


@dataclass
class Bucket:
    """A fresh registry prefix in one store, reached directly and through a counting proxy."""

    store: servers.Store
    counted: servers.Store
    proxy: servers.StoreProxy
    root: str

    def open(self, **kwargs: Any) -> ModelRegistry:
        """A registry whose every request is counted (refreshing at each call unless told)."""
        kwargs.setdefault("refresh_interval", 0)
        return ModelRegistry(self.root, storage_options=self.counted.storage_options, **kwargs)

    def writer(self) -> ModelRegistry:
        """Another host's registry (not counted)."""
        return ModelRegistry(self.root, storage_options=self.store.storage_options)

    def path(self, *parts: str) -> str:
        fs = self.store.filesystem()
        return "/".join([fs._strip_protocol(self.root).rstrip("/"), *parts])

    def count(self, action: Callable[[], Any]) -> Counter[str]:
        """The requests ``action`` makes, by kind."""
        self.proxy.reset()
        action()
        return Counter(self.proxy.kinds())


@pytest.fixture(params=["s3_server", "azurite_server", "gcs_server"])
def bucket(request: pytest.FixtureRequest) -> Iterator[Bucket]:
    store: servers.Store = request.getfixturevalue(request.param)
    with servers.proxied(store) as (counted, proxy):
        yield Bucket(store, counted, proxy, store.url(f"cost-{uuid.uuid4().hex[:10]}"))


def populate(bucket: Bucket, count: int) -> dict[str, dict[str, Any]]:
    """``count`` versions written straight into the bucket (no manifest): their metadata."""
    fs = bucket.store.filesystem()
    objects: dict[str, bytes] = {}
    written = {}
    for i in range(count):
        version = f"1.{i}.0"
        model = cloudpickle.dumps(i)
        artifact = {"file": "model.pkl", "sha256": hashlib.sha256(model).hexdigest(), "size": len(model)}
        written[version] = {"version": version, "artifact": artifact, "auc": i / count}
        objects[bucket.path("versions", version, "model.pkl")] = model
        objects[bucket.path("versions", version, "metadata.json")] = json.dumps(written[version]).encode()
    fs.pipe(objects)
    return written


def truth(bucket: Bucket) -> dict[str, dict[str, Any]]:
    """Every version's metadata as the store holds it, read naively (the reference answer)."""
    fs = bucket.store.filesystem()
    found = {}
    for path in fs.find(bucket.path("versions")):
        version, name = path.rsplit("/", 2)[-2:]
        if name == "metadata.json":
            found[version] = json.loads(fs.cat_file(path))
    return found


def answers(registry: ModelRegistry) -> dict[str, dict[str, Any]]:
    return {version: registry.get_metadata(version) for version in registry.list_versions()}


def pages(bucket: Bucket, objects: int) -> int:
    return max(1, math.ceil(objects / PAGE[bucket.store.scheme]))


def test_an_idle_refresh_is_one_small_conditional_request(bucket: Bucket) -> None:
    writer = bucket.writer()
    for i in range(3):
        writer.save_model(f"1.{i}.0", i, {"stage": "prod"})
    reader = bucket.open()
    assert reader.get_latest_version("prod") == "1.2.0"

    for _ in range(3):
        assert bucket.count(reader.list_versions) == {"GET": IDLE}
        idle = bucket.proxy.requests[-1]
        assert idle.conditional or "alt=media" not in idle.path, "a conditional GET, or metadata only"
        assert "manifest.json" in idle.path and idle.status in (200, 304, 412)


def test_a_refresh_within_the_interval_makes_no_request(bucket: Bucket) -> None:
    bucket.writer().save_model("1.0.0", "model")
    reader = bucket.open(refresh_interval=30)
    reader.list_versions()
    assert bucket.count(lambda: [reader.get_latest_version() for _ in range(100)]) == {}


def test_a_cold_start_reads_the_manifest_and_one_listing_not_each_version(bucket: Bucket) -> None:
    count = 120  # (bench/remote_discovery.py counts 1,000 and 10,000 versions: several pages)
    written = populate(bucket, count)  # by hand: no manifest yet
    first = bucket.open()
    cost = bucket.count(first.list_versions)
    assert cost["GET"] >= count, "without a manifest, each version is read once"
    assert answers(first) == written

    fresh = bucket.open()  # the first one wrote the manifest back: a cold start is cheap now
    cost = bucket.count(fresh.list_versions)
    assert cost["LIST"] <= pages(bucket, 2 * count + 1)
    assert sum(cost.values()) - cost["LIST"] <= 5, cost
    assert answers(fresh) == written


def test_after_a_write_elsewhere_a_refresh_costs_a_few_requests(bucket: Bucket) -> None:
    writer = bucket.writer()
    for i in range(20):
        writer.save_model(f"1.{i}.0", i)
    reader = bucket.open()
    reader.list_versions()

    writer.save_model("2.0.0", "new", {"stage": "staging"})
    cost = bucket.count(lambda: reader.get_latest_version("staging"))
    assert sum(cost.values()) <= 3 + 1 and "LIST" not in cost, cost  # + the new version's metadata
    assert reader.get_latest_version("staging") == "2.0.0"

    writer.set_stage("1.3.0", "prod")
    writer.update_metadata("1.4.0", {"owner": "ml"})
    cost = bucket.count(lambda: reader.get_latest_version("prod"))
    assert sum(cost.values()) <= 3 + 2 and "LIST" not in cost, cost
    assert reader.get_latest_version("prod") == "1.3.0"
    assert reader.get_metadata("1.4.0")["owner"] == "ml"
    assert answers(reader) == truth(bucket)


def test_a_copy_made_by_hand_is_found_by_the_next_full_listing(bucket: Bucket) -> None:
    bucket.writer().save_model("1.0.0", "model")
    full = 3.0
    reader = bucket.open(full_refresh=full)
    before = time.monotonic()  # the reader's full listing happens after this: the next is due later
    assert reader.list_versions() == ["1.0.0"]
    fs = bucket.store.filesystem()
    fs.pipe_file(bucket.path("versions", "1.1.0", "model.pkl"), cloudpickle.dumps("by hand"))
    fs.pipe_file(bucket.path("versions", "1.1.0", "metadata.json"), b'{"owner": "a person"}')

    seen: list[list[str]] = []
    while time.monotonic() < before + full * 0.8:
        seen.clear()
        cost = bucket.count(lambda: seen.append(reader.list_versions()))
        if time.monotonic() < before + full:  # ended before a full listing was due: a cheap refresh
            assert cost == {"GET": IDLE} and seen == [["1.0.0"]], "no listing before full_refresh"
        time.sleep(0.05)
    deadline = before + full + 10.0  # a generous bound on a busy machine
    while reader.list_versions() != ["1.0.0", "1.1.0"]:
        assert time.monotonic() < deadline, "not found by a full listing"
        time.sleep(0.05)
    assert reader.get_metadata("1.1.0") == {"owner": "a person"}


def _missing(fs: Any, path: str, data: bytes) -> None:
    fs.rm_file(path)


def _garbage(fs: Any, path: str, data: bytes) -> None:
    fs.pipe_file(path, b"\x00\xff not a manifest")


def _hand_edited(fs: Any, path: str, data: bytes) -> None:
    head, body = data.split(b"\n", 1)
    fs.pipe_file(path, head + b"\n" + body.replace(b'\\"auc\\":', b'\\"auc\\": 9, \\"x\\":', 1))


def _older_format(fs: Any, path: str, data: bytes) -> None:
    head, body = data.split(b"\n", 1)
    fs.pipe_file(path, head.replace(b'"format": 1', b'"format": 0') + b"\n" + body)


def _truncated(fs: Any, path: str, data: bytes) -> None:
    fs.pipe_file(path, data[: len(data) // 2])


DAMAGE = {
    "missing": _missing,
    "garbage": _garbage,
    "hand-edited": _hand_edited,
    "older format": _older_format,
    "truncated": _truncated,
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_manifest_costs_one_slower_refresh_never_a_wrong_answer(
    bucket: Bucket, damage: str
) -> None:
    writer = bucket.writer()
    for i in range(8):
        writer.save_model(f"1.{i}.0", i, {"auc": i / 10})
    watching = bucket.open(refresh_interval=0.2)  # a running service
    watching.list_versions()
    fs = bucket.store.filesystem()
    path = bucket.path(MANIFEST)
    DAMAGE[damage](fs, path, fs.cat_file(path))

    cold = bucket.open()
    cost = bucket.count(cold.list_versions)
    assert cost["GET"] >= 8, "the manifest is not believed: each version is read"
    assert answers(cold) == truth(bucket)

    writer.set_stage("1.2.0", "prod")  # writes after the damage: seen within the interval
    writer.save_model("1.8.0", 8, {"stage": "prod"})
    deadline = time.monotonic() + 0.2 + 2.0
    while watching.get_latest_version("prod") != "1.8.0":
        assert time.monotonic() < deadline, "a write after the damage was not seen in time"
        time.sleep(0.05)
    assert answers(watching) == answers(cold) == truth(bucket)

    again = bucket.open()
    cost = bucket.count(again.list_versions)
    assert sum(cost.values()) - cost["LIST"] <= 5, f"the manifest was not made whole again: {cost}"
    assert answers(again) == truth(bucket)


def test_a_manifest_restored_from_an_old_copy_is_confirmed_not_believed(bucket: Bucket) -> None:
    writer = bucket.writer()
    for i in range(4):
        writer.save_model(f"1.{i}.0", i, {"stage": "staging"})
    fs = bucket.store.filesystem()
    old = fs.cat_file(bucket.path(MANIFEST))
    watching = bucket.open()
    watching.list_versions()
    writer.set_stage("1.1.0", "prod")
    writer.save_model("1.4.0", 4)
    assert watching.get_latest_version("prod") == "1.1.0"

    fs.pipe_file(bucket.path(MANIFEST), old)  # someone restores yesterday's copy
    assert answers(watching) == truth(bucket)
    writer.update_metadata("1.0.0", {"stage": "prod", "owner": "ml"})  # built on the old copy
    writer.set_stage("1.3.0", "archived")
    assert answers(watching) == truth(bucket)
    assert answers(bucket.open()) == truth(bucket)


def test_concurrent_writers_on_many_hosts_never_lose_an_entry(
    bucket: Bucket, clean_children: Children
) -> None:
    hosts = 4
    versions = [[f"{host + 1}.{i}.0" for i in range(5)] for host in range(hosts)]
    publish = functools.partial(on_store, {bucket.store.scheme: bucket.store.storage_options}, publish_each)
    go = clean_children.context.Barrier(hosts + 1)
    writers = [clean_children.start(publish, bucket.root, batch, go) for batch in versions]
    go.wait(Children.TIMEOUT)
    for writer in writers:
        writer.join(Children.TIMEOUT)
        assert writer.exitcode == 0

    reader = bucket.open()
    cost = bucket.count(reader.list_versions)
    assert reader.list_versions() == sorted((v for batch in versions for v in batch), key=_semver)
    assert sum(cost.values()) - cost["LIST"] <= 5, f"entries were lost from the manifest: {cost}"
    assert answers(reader) == truth(bucket)


def _semver(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


# the manifest is checked against the store's own checksums, and read only so far ----------------


def forge(bucket: Bucket, version: str, change: dict[str, Any], successor: bool = False) -> None:
    """Hand-edit the manifest's copy of ``version``'s metadata, keep the object's recorded stamp and
    recompute the checksum, as anyone who can write to the bucket can; with ``successor``, make it a
    proper successor of the manifest there (a higher ``seq``, that one in its history)."""
    fs = bucket.store.filesystem()
    path = bucket.path(MANIFEST)
    head, body = fs.cat_file(path).split(b"\n", 1)
    value = json.loads(body)
    entry = value["versions"][version]
    entry["metadata"] = json.dumps({**json.loads(entry["metadata"]), **change})
    if successor:
        value["history"].insert(0, [objects_for(bucket.store.scheme, fs).stamp(fs.info(path)), value["seq"]])
        value["seq"] = entry["seq"] = value["seq"] + 1
    body = json.dumps(value, separators=(",", ":")).encode()
    header = {**json.loads(head), "sha256": hashlib.sha256(body).hexdigest()}
    fs.pipe_file(path, json.dumps(header).encode() + b"\n" + body)


@pytest.mark.parametrize("full_refresh", [60.0, 0.0])
def test_a_forged_copy_in_the_manifest_is_checked_against_the_stores_md5(
    bucket: Bucket, full_refresh: float
) -> None:
    """A copy whose checksum was recomputed after a hand edit still differs from the MD5 the listing
    states for its object (S3's ETag, Azure's Content-MD5, GCS's md5Hash): read from the object."""
    writer = bucket.writer()
    for i in range(3):
        writer.save_model(f"1.{i}.0", i, {"stage": "staging"})
    forge(bucket, "1.1.0", {"stage": "prod", "artifact": {"sha256": "0" * 64}})

    cold = bucket.open(full_refresh=full_refresh)
    cost = bucket.count(cold.list_versions)
    assert cold.get_latest_version("prod") is None
    assert answers(cold) == truth(bucket)
    assert any("1.1.0" in r.path and r.method == "GET" for r in bucket.proxy.requests), cost

    again = bucket.open(full_refresh=full_refresh)  # the cold reader wrote a true manifest back
    cost = bucket.count(again.list_versions)
    assert sum(cost.values()) - cost["LIST"] <= 2, cost
    assert answers(again) == truth(bucket)


def test_a_forged_successor_manifest_is_undone_by_the_next_full_listing(bucket: Bucket) -> None:
    """Between full listings a reader applies a manifest's new entries without a listing. On S3 a
    copy must still have the MD5 its recorded ETag states, so a forged one is read from its object at
    once; on Azure and GCS, whose stamps are no checksums, the next full listing undoes it."""
    writer = bucket.writer()
    for i in range(3):
        writer.save_model(f"1.{i}.0", i, {"stage": "staging"})
    reader = bucket.open(full_refresh=3600)  # every refresh below reads the manifest, none lists
    assert reader.get_latest_version("prod") is None
    forge(bucket, "1.2.0", {"stage": "prod"}, successor=True)
    cost = bucket.count(reader.list_versions)
    assert "LIST" not in cost and cost["GET"] >= 1, cost
    if bucket.store.scheme == "s3":
        assert reader.get_latest_version("prod") is None
        assert answers(reader) == truth(bucket)
    reader.storage.discovery.force_full()  # as every full_refresh seconds
    assert reader.get_latest_version("prod") is None
    assert answers(reader) == truth(bucket)


@pytest.fixture
def s3_bucket(s3_server: servers.Store) -> Iterator[Bucket]:
    with servers.proxied(s3_server) as (counted, proxy):
        yield Bucket(s3_server, counted, proxy, s3_server.url(f"cost-{uuid.uuid4().hex[:10]}"))


def test_a_huge_junk_manifest_is_read_no_further_than_the_limit(s3_bucket: Bucket) -> None:
    """A manifest larger than the limit is not used: a cold reader reads at most the limit + 1 bytes
    of it (a ranged GET), lists instead, and writes a true manifest back."""
    writer = s3_bucket.writer()
    for i in range(4):
        writer.save_model(f"1.{i}.0", i, {"stage": "prod"})
    junk = 3 * MIN_READ_LIMIT
    s3_bucket.store.filesystem().pipe_file(s3_bucket.path(MANIFEST), b"[" * junk)

    cold = s3_bucket.open()
    s3_bucket.count(cold.list_versions)
    assert 0 < s3_bucket.proxy.sent(MANIFEST) <= MIN_READ_LIMIT + 1
    assert answers(cold) == truth(s3_bucket)

    again = s3_bucket.open()  # the junk was replaced: a cold start reads the manifest, not each version
    cost = s3_bucket.count(again.list_versions)
    assert sum(cost.values()) - cost["LIST"] <= 2, cost
    assert s3_bucket.proxy.sent(MANIFEST) < 64 << 10


def test_the_read_limit_grows_with_the_versions_listed(s3_bucket: Bucket) -> None:
    """An honest manifest larger than a cold reader first reads (large metadata, many versions) is
    read again within what the listing allows, not replaced by a GET per version."""
    writer = s3_bucket.writer()
    blob = "x" * (200 << 10)
    count = MIN_READ_LIMIT // len(blob) + 8
    for i in range(count):
        writer.save_model(f"1.{i}.0", i, {"blob": blob})
    assert s3_bucket.store.filesystem().size(s3_bucket.path(MANIFEST)) > MIN_READ_LIMIT

    cold = s3_bucket.open()
    cost = s3_bucket.count(cold.list_versions)
    assert cost["GET"] <= 3, f"the manifest was not used: {cost}"
    assert answers(cold) == truth(s3_bucket)
