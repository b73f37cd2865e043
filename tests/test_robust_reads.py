"""One bad file costs only itself: whatever lies in a version's ``metadata.json`` (or in place of
it), every other version keeps answering, through the Python API, ``GET /models`` and the CLI, on
local disk and on S3 (moto)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import servers
from flask import Flask
from helpers_procs import list_unprivileged
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from flask_model_registry import CorruptVersionError, FlaskModelRegistry, ModelRegistry
from flask_model_registry.metadata import MAX_METADATA_READ_BYTES

#: Every kind of unusable metadata.json the registry must survive, by name.
JUNK: dict[str, bytes] = {
    "invalid UTF-8": b'{"a": "\xff\xfe"}',
    "not JSON": b"{not json",
    "empty": b"",
    "an array": b"[1, 2]",
    "a string": b'"text"',
    "an int of 5,000 digits": b'{"n": ' + b"9" * 5000 + b"}",
    "a negative int of 5,000 digits": b'{"n": -' + b"9" * 5000 + b"}",
    "nesting past the recursion limit": b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "nesting of 500 levels": b'{"a": ' + b"[" * 500 + b"]" * 500 + b"}",
    "NaN": b'{"auc": NaN}',
    "Infinity": b'{"auc": Infinity}',
    "-Infinity": b'{"nested": {"auc": [-Infinity]}}',
    "1e999": b'{"auc": 1e999}',
    "-1e999": b'{"auc": -1e999}',
    "a lone surrogate key": b'{"\\ud800": 1}',
    "a lone surrogate value": b'{"k": ["x\\udfff"]}',
    "over the size limit": b'{"pad": "' + b"x" * MAX_METADATA_READ_BYTES + b'"}',
}


def within(seconds: float, call: Callable[[], Any]) -> Any:
    """``call()``, failing the test if it has not returned after ``seconds`` (it must never block)."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(("value", call()))
        except BaseException as exc:
            outcome.append(("error", exc))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"still blocked after {seconds} s"
    kind, value = outcome[0]
    if kind == "error":
        raise value
    return value


@pytest.fixture(params=["local", "s3"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> servers.RegistryTarget:
    """A fresh registry location on local disk and in moto's S3."""
    name = "registry"
    if request.param == "s3":
        store: servers.Store = request.getfixturevalue("s3_server")
        return servers.RegistryTarget("s3", store.url(f"{name}-{os.urandom(6).hex()}"), store)
    return servers.RegistryTarget("local", str(tmp_path / name))


def put(target: servers.RegistryTarget, version: str, name: str, data: bytes) -> None:
    """Write a file of a version by hand, as people and jobs do."""
    target.filesystem.pipe_file(target.path("versions", version, name), data)


def app_over(target: servers.RegistryTarget) -> Flask:
    app = Flask("prediction_service")
    app.config.update(
        TESTING=True,
        MODEL_REGISTRY_ROOT=target.root,
        MODEL_REGISTRY_STORAGE_OPTIONS=target.storage_options,
        MODEL_REGISTRY_REFRESH_INTERVAL=0,
    )
    FlaskModelRegistry(app)
    return app


def assert_only_itself_is_broken(target: servers.RegistryTarget, bad: str, match: str = "") -> None:
    """Every door still answers: the bad version is an ``error`` entry, the others serve as usual.
    Checked in a fresh registry (a new process) and in one that was running before."""
    for registry in (target.open(), target.open(refresh_interval=0)):
        assert registry.list_versions() == ["1.0.0", bad, "2.0.0"]
        assert registry.get_latest_version() == "2.0.0"
        assert registry.get_latest_version(stage="prod") == "1.0.0"
        assert registry.get_metadata("1.0.0")["stage"] == "prod"
        assert registry.get_model("2.0.0") == "second"
        with pytest.raises(CorruptVersionError, match=rf"{bad} is corrupt: metadata\.json.*{match}"):
            registry.get_metadata(bad)
        with pytest.raises(CorruptVersionError):
            registry.get_model(bad)

    app = app_over(target)
    client = app.test_client()
    listing = client.get("/models")
    assert listing.status_code == 200
    body = listing.get_json()
    assert [item["version"] for item in body] == ["1.0.0", bad, "2.0.0"]
    assert set(body[1]) == {"version", "error"} and "metadata.json" in body[1]["error"]
    assert client.get("/models?stage=prod").get_json()[0]["version"] == "1.0.0"
    assert client.get("/models/latest").get_json()["version"] == "2.0.0"
    assert client.get("/models/1.0.0").status_code == 200
    broken = client.get(f"/models/{bad}")
    assert broken.status_code == 500 and broken.get_json()["error"]["message"].startswith(f"version {bad}")
    assert client.get(f"/models/{bad}/history").status_code == 200

    with app.app_context():  # as `flask` runs a command (FlaskCliRunner alone does not push one)
        runner = app.test_cli_runner()
        table = runner.invoke(args=["models", "list"])
        assert table.exit_code == 0 and f"{bad}" in table.output and "ERROR: metadata.json" in table.output
        rows = json.loads(runner.invoke(args=["models", "list", "--json"]).output)
        assert [row["version"] for row in rows] == ["1.0.0", bad, "2.0.0"]
        assert "metadata.json" in rows[1]["error"]
        shown = runner.invoke(args=["models", "show", bad])
        assert shown.exit_code == 1 and shown.output.startswith(f"Error: version {bad} is corrupt")
        assert json.loads(runner.invoke(args=["models", "show", "1.0.0"]).output)["stage"] == "prod"
        assert runner.invoke(args=["models", "history"]).exit_code == 0


@pytest.fixture
def two_good(target: servers.RegistryTarget) -> servers.RegistryTarget:
    """1.0.0 (prod) and 2.0.0 published; the test puts a bad 1.5.0 between them."""
    writer = target.open()
    writer.save_model("1.0.0", "first", {"stage": "prod"})
    writer.save_model("2.0.0", "second")
    return target


@pytest.mark.parametrize("kind", list(JUNK))
def test_unusable_metadata_is_an_error_entry_and_nothing_worse(local_two_good, kind: str) -> None:
    put(local_two_good, "1.5.0", "model.pkl", b"never loaded")
    put(local_two_good, "1.5.0", "metadata.json", JUNK[kind])
    assert_only_itself_is_broken(local_two_good, "1.5.0")


def test_every_kind_at_once(two_good) -> None:
    """All the junk in one registry (local and S3): each bad version is its own error entry."""
    bad = {f"1.5.{n}": data for n, data in enumerate(JUNK.values())}
    for version, data in bad.items():
        put(two_good, version, "metadata.json", data)
    registry = two_good.open()
    assert registry.list_versions() == ["1.0.0", *bad, "2.0.0"]
    assert registry.get_latest_version(stage="prod") == "1.0.0"
    assert registry.get_model("2.0.0") == "second"
    errors = {e.version: e.error for e in registry.snapshot().entries if e.error is not None}
    assert list(errors) == list(bad) and all(e.startswith("metadata.json ") for e in errors.values())
    app = app_over(two_good)
    listing = app.test_client().get("/models").get_json()
    assert [item["version"] for item in listing if "error" in item] == list(bad)
    with app.app_context():
        table = app.test_cli_runner().invoke(args=["models", "list"])
    assert table.exit_code == 0 and table.output.count("ERROR: metadata.json") == len(bad)


def test_a_running_registry_keeps_seeing_changes_around_a_bad_file(two_good) -> None:
    # full_refresh=0: on object storage, files put by hand (not by a registry) are found by a full
    # listing, every MODEL_REGISTRY_FULL_REFRESH seconds by default.
    registry = two_good.open(refresh_interval=0, full_refresh=0)
    assert registry.list_versions() == ["1.0.0", "2.0.0"]
    put(two_good, "1.5.0", "metadata.json", JUNK["nesting past the recursion limit"])
    assert registry.list_versions() == ["1.0.0", "1.5.0", "2.0.0"]
    two_good.open().save_model("3.0.0", "third")  # another process publishes
    assert registry.get_latest_model() == "third"
    put(two_good, "1.5.0", "metadata.json", b'{"stage": "prod", "fixed": true}')  # repaired by hand
    assert registry.get_metadata("1.5.0")["fixed"] is True
    assert registry.get_latest_version(stage="prod") == "1.5.0"


def test_metadata_over_the_limit_says_so(two_good) -> None:
    put(two_good, "1.5.0", "metadata.json", b" " * (3 * MAX_METADATA_READ_BYTES))
    assert_only_itself_is_broken(two_good, "1.5.0", match="larger than the limit of 1048576 bytes")
    data, _ = two_good.open().storage.read_metadata("1.5.0")
    assert len(data) == MAX_METADATA_READ_BYTES + 1, "read no further than the limit + 1 byte"


def test_metadata_just_under_the_limit_is_read(target: servers.RegistryTarget) -> None:
    """Hand-made metadata may be larger than the registry writes, up to the read limit."""
    document = b'{"pad": "' + b"x" * (MAX_METADATA_READ_BYTES - 20) + b'"}'
    assert len(document) <= MAX_METADATA_READ_BYTES
    put(target, "1.0.0", "metadata.json", document)
    assert len(target.open().get_metadata("1.0.0")["pad"]) == MAX_METADATA_READ_BYTES - 20


# Local disk: sparse files, FIFOs, folders, sockets ------------------------------------------------


@pytest.fixture
def local_two_good(registry_root: Path) -> servers.RegistryTarget:
    registry = ModelRegistry(registry_root)
    registry.save_model("1.0.0", "first", {"stage": "prod"})
    registry.save_model("2.0.0", "second")
    return servers.RegistryTarget("local", str(registry_root))


@pytest.fixture
def fifo() -> Iterator[Callable[[Path], None]]:
    """``fifo(path)`` makes a FIFO; afterwards any reader still blocked on one (the bug) is let go,
    so that no thread outlives the test."""
    made: list[Path] = []

    def make(path: Path) -> None:
        os.mkfifo(path)
        made.append(path)

    yield make
    for path in made:
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))  # a blocked reader now reads EOF
        except OSError as exc:
            assert exc.errno in (errno.ENXIO, errno.ENOENT)  # nobody was reading: good


def test_a_huge_sparse_metadata_file_is_not_read_whole(local_two_good) -> None:
    """A metadata.json of 100 GiB (sparse: no disk used) is read no further than the limit."""
    folder = Path(local_two_good.root, "versions", "1.5.0")
    folder.mkdir()
    with open(folder / "metadata.json", "wb") as f:
        f.truncate(100 << 30)
    assert_only_itself_is_broken(local_two_good, "1.5.0", match="larger than the limit")


@pytest.mark.parametrize("kind", ["a FIFO", "a folder", "a socket"])
def test_metadata_that_is_not_a_regular_file_never_blocks(local_two_good, fifo, kind: str) -> None:
    folder = Path(local_two_good.root, "versions", "1.5.0")
    folder.mkdir()
    path = folder / "metadata.json"
    if kind == "a FIFO":
        fifo(path)
    elif kind == "a folder":
        path.mkdir()
    else:
        with socket.socket(socket.AF_UNIX) as sock:
            # Bound relative to its folder: a socket path is limited to 107 bytes, tmp paths under
            # pytest-xdist are longer. The socket file stays after the close.
            cwd = os.getcwd()
            os.chdir(folder)
            try:
                sock.bind("metadata.json")
            finally:
                os.chdir(cwd)
    within(20, lambda: assert_only_itself_is_broken(local_two_good, "1.5.0", match="cannot be read"))


@pytest.mark.parametrize("kind", ["a FIFO", "a folder"])
def test_an_artefact_that_is_not_a_regular_file_is_corrupt_not_a_hang(
    local_two_good, fifo, kind: str
) -> None:
    artefact = Path(local_two_good.root, "versions", "2.0.0", "model.pkl")
    artefact.unlink()
    if kind == "a FIFO":
        fifo(artefact)
    else:
        artefact.mkdir()
    registry = local_two_good.open()
    for call in (registry.get_model, registry.verify):
        with pytest.raises(CorruptVersionError, match=r"2\.0\.0: artefact model\.pkl cannot be read"):
            within(20, lambda call=call: call("2.0.0"))
    with pytest.raises(CorruptVersionError):
        within(20, registry.get_latest_model)
    assert registry.get_model("1.0.0") == "first"


# Unreadable -------------------------------------------------------------------------------------


def test_an_unreadable_metadata_file_is_an_error_entry(clean_children, tmp_path: Path) -> None:
    """No permission to read one metadata.json (EACCES): only that version is broken. Read by an
    unprivileged child process, since root reads any file."""
    root = Path(tempfile.mkdtemp(prefix="registry-"))  # not under tmp_path: nobody must reach it
    try:
        root.chmod(0o755)
        registry = ModelRegistry(root)
        registry.save_model("1.0.0", "first", {"stage": "prod"})
        registry.save_model("1.5.0", "locked away")
        registry.save_model("2.0.0", "second")
        (root / "versions" / "1.5.0" / "metadata.json").chmod(0)
        results = clean_children.context.Queue()
        clean_children.run(list_unprivileged, str(root), results)
        errors, model = results.get(timeout=30)
    finally:
        shutil.rmtree(root)
    assert errors == {
        "1.0.0": None,
        "1.5.0": "metadata.json cannot be read (Permission denied)",
        "2.0.0": None,
    }
    assert model == "second"


def test_an_archived_s3_object_is_an_error_entry_not_a_failed_listing(s3_server: servers.Store) -> None:
    """A metadata.json in the GLACIER storage class (GET answers 403 InvalidObjectState) is one
    error entry; fresh processes list and load the rest, and a promotion of it is a clear error."""
    target = servers.RegistryTarget("s3", s3_server.url(f"archived-{os.urandom(6).hex()}"), s3_server)
    writer = target.open()
    writer.save_model("1.0.0", "first", {"stage": "prod"})
    writer.save_model("2.0.0", "second")
    bucket, key = s3_server.bucket, target.path("versions", "1.5.0", "metadata.json").partition("/")[2]
    target.filesystem.call_s3("put_object", Bucket=bucket, Key=key, Body=b"{}", StorageClass="GLACIER")
    registry = target.open()
    assert registry.list_versions() == ["1.0.0", "1.5.0", "2.0.0"]
    assert registry.get_model("2.0.0") == "second"
    assert registry.get_latest_version(stage="prod") == "1.0.0"
    with pytest.raises(CorruptVersionError, match=r"1\.5\.0 is corrupt: metadata\.json cannot be read"):
        registry.get_metadata("1.5.0")
    with pytest.raises(CorruptVersionError, match="cannot be read"):
        registry.set_stage("1.5.0", "prod")
    listing = app_over(target).test_client().get("/models")
    assert listing.status_code == 200 and "error" in listing.get_json()[1]


# A stage that is not a string --------------------------------------------------------------------


@pytest.mark.parametrize("stage", [["prod"], {}, {"prod": True}, 1, True, None, 1.5])
def test_a_stage_that_is_not_a_string_matches_no_stage_query(local_two_good, stage: Any) -> None:
    put(local_two_good, "1.5.0", "model.pkl", b"")
    put(local_two_good, "1.5.0", "metadata.json", json.dumps({"stage": stage}).encode())
    registry = local_two_good.open()
    assert registry.get_latest_version(stage="prod") == "1.0.0"
    assert registry.get_latest_version() == "2.0.0"
    assert registry.get_latest_version(stage=["prod"]) is None  # type: ignore[arg-type]
    assert registry.get_latest_version(stage=1) is None  # type: ignore[arg-type]
    assert registry.get_metadata("1.5.0")["stage"] == stage  # shown as written
    client = app_over(local_two_good).test_client()
    assert [item["version"] for item in client.get("/models?stage=prod").get_json()] == ["1.0.0"]
    assert client.get("/models/latest?stage=prod").get_json()["version"] == "1.0.0"
    assert client.get("/models/latest?stage=staging").status_code == 404
    assert [item["version"] for item in client.get("/models").get_json()] == ["1.0.0", "1.5.0", "2.0.0"]


# Freshness after a failed rescan ------------------------------------------------------------------


def _fail_once(storage: Any, name: str, error: BaseException) -> None:
    """The first call of ``storage.name`` does its work (a watcher's signal is consumed), then
    fails with ``error``, as a metadata file that broke the parser used to."""
    original = getattr(storage, name)
    calls = []

    def failing(*args: Any, **kwargs: Any) -> Any:
        calls.append(None)
        result = original(*args, **kwargs)
        if len(calls) == 1:
            raise error
        return result

    setattr(storage, name, failing)


@pytest.mark.parametrize("error", [ValueError("boom"), RecursionError(), OSError(errno.EMFILE, "too many")])
def test_a_fresh_process_whose_first_scan_fails_tries_again(local_two_good, error: BaseException) -> None:
    registry = local_two_good.open()
    _fail_once(registry.storage, "scan_metadata", error)
    with pytest.raises(type(error)):
        registry.list_versions()
    assert registry.list_versions() == ["1.0.0", "2.0.0"], "not an empty snapshot forever"
    assert registry.get_metadata("1.0.0")["stage"] == "prod"


@pytest.mark.parametrize("watch", [True, False])
@pytest.mark.parametrize("error", [ValueError("boom"), OSError(errno.EMFILE, "too many")])
def test_a_running_process_whose_rescan_fails_sees_the_change_at_the_next_call(
    local_two_good, error: BaseException, watch: bool, caplog: pytest.LogCaptureFixture
) -> None:
    registry = local_two_good.open(watch=watch)
    assert registry.list_versions() == ["1.0.0", "2.0.0"]
    local_two_good.open().save_model("3.0.0", "third")  # another process publishes
    _fail_once(registry.storage, "read_metadata_many", error)
    assert registry.list_versions() == ["1.0.0", "2.0.0"]  # the last state, with a warning
    assert "refresh failed, serving the last state" in caplog.text
    assert registry.list_versions() == ["1.0.0", "2.0.0", "3.0.0"]
    assert registry.get_latest_model() == "third"


# Fuzz: any bytes as metadata.json -----------------------------------------------------------------

#: Any JSON object as Python's ``json`` writes it by default: NaN, Infinity, escaped lone surrogates.
_any_text = st.text(st.characters(exclude_categories=()), max_size=8)


def _nest(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=4) | st.dictionaries(_any_text, inner, max_size=4)


_any_json = st.dictionaries(
    _any_text,
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | _any_text, _nest, max_leaves=8),
    max_size=4,
).map(lambda value: json.dumps(value).encode())
#: Long runs of what breaks parsers: brackets (nesting), digits (long ints), exponents (overflow).
_runs = st.builds(
    lambda prefix, piece, n, suffix: prefix + piece * n + suffix,
    st.sampled_from([b"", b'{"a": ', b"["]),
    st.sampled_from([b"[", b"{", b'{"a":', b"9", b"1e9", b"\\ud800", b"\xed\xa0\x80", b"\x00"]),
    st.sampled_from([0, 1, 2, 50, 99, 101, 400, 1000, 4301, 100_000]),
    st.sampled_from([b"", b"}", b"]", b"e999}", b"0}", b'"}']),
)
#: A JSON document with a few bytes changed.
_mutated = st.builds(
    lambda data, at, junk: data[: at % (len(data) + 1)] + junk + data[at % (len(data) + 1) + len(junk) :],
    _any_json,
    st.integers(0, 10_000),
    st.binary(min_size=1, max_size=4),
)
metadata_files = st.binary(max_size=512) | _any_json | _runs | _mutated


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=metadata_files)
def test_any_bytes_as_metadata_cost_only_their_version(local_two_good, data: bytes) -> None:
    put(local_two_good, "1.5.0", "metadata.json", data)
    registry = _fuzzed_registry(local_two_good)
    assert registry.list_versions() == ["1.0.0", "1.5.0", "2.0.0"]
    assert registry.get_latest_version(stage="prod") == "1.0.0"
    assert registry.get_model("2.0.0") == "second"
    entry = registry.snapshot().by_version["1.5.0"]
    if entry.metadata is None:
        assert entry.error is not None and entry.error.startswith("metadata.json ")
        event(entry.error.split("(")[0].strip())  # the kinds of junk seen (--hypothesis-show-statistics)
        with pytest.raises(CorruptVersionError):
            registry.get_metadata("1.5.0")
    else:
        event("a usable JSON object")
        json.dumps(registry.get_metadata("1.5.0"), allow_nan=False).encode("utf-8")  # servable as is
    client = _fuzzed_app(local_two_good).test_client()
    listing = client.get("/models")
    assert listing.status_code == 200 and len(listing.get_json()) == 3
    assert client.get("/models/1.5.0").status_code in (200, 500)
    assert client.get("/models/latest?stage=prod").get_json()["version"] == "1.0.0"
    assert client.get("/models?stage=prod").status_code == 200


_FUZZED: dict[str, Any] = {}


def _fuzzed_registry(target: servers.RegistryTarget) -> ModelRegistry:
    """One running registry per fuzzed folder (across examples, as a service sees edits)."""
    if _FUZZED.get("root") != target.root:
        _FUZZED.clear()
        _FUZZED.update(root=target.root, registry=target.open(), app=app_over(target))
    return _FUZZED["registry"]


def _fuzzed_app(target: servers.RegistryTarget) -> Flask:
    _fuzzed_registry(target)
    return _FUZZED["app"]
