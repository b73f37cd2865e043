"""Stress: ``wrk`` against gunicorn (2 workers) while versions are published and promoted.

Run: ``python bench/stress.py [--seconds 30] [--checkers 2]`` (needs ``wrk``, a Debian package).
Everything runs on 127.0.0.1 and stops at the end, whatever happens:

- gunicorn runs the Dockerfile's command (the example app, 2 workers) on a fresh local registry;
- a publisher process publishes a version every 100 ms for the whole run (``1.0.1``, ``1.0.2``, …,
  each a ``LinearModel`` whose prediction for ``[1, 0, 0]`` is its patch number), promotes every
  third one to ``prod`` and flags every fifth as ``canary``;
- ``wrk -t2 -c16`` hammers ``GET /models/latest``; its Lua script counts the answers by status and
  by the version they name (each must name one version, in the answer and in its metadata);
- checker threads validate answers one by one: ``GET /models/latest`` and ``?stage=prod`` must be
  ``200`` JSON naming a version that was published (and promoted, for ``prod``) with the artefact it
  was published with, never older than the newest one the publisher had finished before the request
  was sent (a local registry is always fresh), never older than the previous answer.

It prints requests/s, requests, 5xx answers, wrong answers, and the RSS of each worker after a
warm-up and at the end; the exit status is 1 if there was a 5xx, a wrong answer, or a worker grew by
more than :data:`RSS_GROWTH_LIMIT_MIB`. ``tests/test_stress.py`` runs a short version of it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # the example app's model class, pickled by reference
    sys.path.insert(0, str(REPO))

from example_app.model import LinearModel  # noqa: E402
from flask_model_registry import ModelRegistry  # noqa: E402
from flask_model_registry.versioning import sort_key  # noqa: E402
from tests.servers_gunicorn import gunicorn  # noqa: E402

WORKERS = 2
WRK = ["wrk", "-t2", "-c16", "--timeout", "10s"]
#: Seconds between two publications.
PUBLISH_EVERY = 0.1
#: Every how many publications a version is promoted to ``prod``, and flagged ``canary``.
PROMOTE_EVERY, CANARY_EVERY = 3, 5
#: The most a worker's resident memory may grow from the warm-up to the end.
RSS_GROWTH_LIMIT_MIB = 20
#: Features for which the model of version ``1.0.<n>`` predicts ``n``.
FEATURES = [1, 0, 0]

#: Counts wrk's answers by status, and the 200s by the version they name; prints them in done().
LUA = r"""
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  statuses = {}
  versions = {}
  malformed = 0
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status == 200 then
    local named, consistent = nil, true
    for version in string.gmatch(body, '"version":"([^"]*)"') do
      if named == nil then named = version elseif version ~= named then consistent = false end
    end
    if named == nil or not consistent then
      malformed = malformed + 1
    else
      versions[named] = (versions[named] or 0) + 1
    end
  end
end

function done(summary, latency, requests)
  local statuses_all, versions_all, malformed_all = {}, {}, 0
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      statuses_all[status] = (statuses_all[status] or 0) + n
    end
    for version, n in pairs(thread:get("versions")) do
      versions_all[version] = (versions_all[version] or 0) + n
    end
    malformed_all = malformed_all + thread:get("malformed")
  end
  local errors = summary.errors
  io.write(string.format("stress requests %d %d\n", summary.requests, summary.duration))
  io.write(string.format("stress socket-errors %d %d %d %d\n",
    errors.connect, errors.read, errors.write, errors.timeout))
  for status, n in pairs(statuses_all) do io.write(string.format("stress status %d %d\n", status, n)) end
  for version, n in pairs(versions_all) do io.write(string.format("stress version %s %d\n", version, n)) end
  io.write(string.format("stress malformed %d\n", malformed_all))
end
"""


def version_of(i: int) -> str:
    return f"1.0.{i}"


def model_of(i: int) -> LinearModel:
    """The model of :func:`version_of` ``(i)``: it predicts ``i`` for :data:`FEATURES`."""
    return LinearModel((float(i), 1.0, 1.0))


def predicted_by(version: str) -> list[float]:
    """What the model of ``version`` predicts for :data:`FEATURES`."""
    return [float(version.rsplit(".", 1)[1])]


# the publisher (a process of its own, as a training job is) ----------------------------------------


def publish(root: str, log: str, seconds: float, every: float = PUBLISH_EVERY) -> None:
    """Publish a version every ``every`` seconds for ``seconds``; promote and flag some. Each change
    is logged (``published 1.0.4``, ``promoted 1.0.3``) once it has returned."""
    registry = ModelRegistry(root)
    deadline = time.monotonic() + seconds
    with open(log, "a") as out:

        def note(what: str, version: str) -> None:
            out.write(f"{what} {version}\n")
            out.flush()

        for i in range(1, 1_000_000):
            tick = time.monotonic()
            if tick >= deadline:
                break
            version = version_of(i)
            registry.save_model(version, model_of(i), {"batch": i}, actor="stress-publisher")
            note("published", version)
            if i % PROMOTE_EVERY == 0:
                registry.set_stage(version, "prod", actor="stress-publisher")
                note("promoted", version)
            if i % CANARY_EVERY == 0:
                registry.update_metadata(version, {"canary": True}, actor="stress-publisher")
            time.sleep(max(0.0, tick + every - time.monotonic()))


@contextlib.contextmanager
def publisher(
    root: Path, log: Path, seconds: float, every: float = PUBLISH_EVERY
) -> Iterator[subprocess.Popen[bytes]]:
    """Run :func:`publish` in a process of its own; it is killed if still running when the block ends."""
    command = [sys.executable, __file__, "--publish-into", str(root), "--log", str(log)]
    command += ["--seconds", str(seconds), "--every", str(every)]
    process = subprocess.Popen(command, cwd=REPO, stdin=subprocess.DEVNULL)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


class PublishedLog:
    """What the publisher had finished, read from its log as it grows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self.published: list[str] = []
        self.promoted: list[str] = []

    def refresh(self) -> PublishedLog:
        with contextlib.suppress(FileNotFoundError), open(self.path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
            complete = data[: data.rfind(b"\n") + 1]  # a line being written is read next time
            self._offset += len(complete)
            for line in complete.decode().splitlines():
                what, version = line.split()
                (self.published if what == "published" else self.promoted).append(version)
        return self

    def newest(self, what: str) -> str | None:
        versions = self.published if what == "published" else self.promoted
        return versions[-1] if versions else None


# the checkers ---------------------------------------------------------------------------------------


def fetch(url: str) -> tuple[int, bytes]:
    """One GET on a new connection: the status and the body (error statuses too)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def newer_or_same(version: str, than: str | None) -> bool:
    return than is None or sort_key(version) >= sort_key(than)


@dataclass
class Checker:
    """A thread that sends requests one after another and checks each answer (see the module)."""

    base: str
    log: PublishedLog
    statuses: Counter[int] = field(default_factory=Counter)
    wrong: list[str] = field(default_factory=list)
    #: Every (version, sha256) an answer named.
    seen: set[tuple[str, str]] = field(default_factory=set)
    _last: dict[str, str] = field(default_factory=dict)

    ASKS = (("latest", "/models/latest"), ("prod", "/models/latest?stage=prod"))

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            for name, path in self.ASKS:
                self.log.refresh()
                # the newest change finished before the request is sent: the answer may not be older
                floor = self.log.newest("promoted" if name == "prod" else "published")
                try:
                    status, body = fetch(self.base + path)
                except OSError as exc:
                    self.wrong.append(f"{path}: no answer ({exc})")
                    continue
                self.statuses[status] += 1
                problem = self._check(name, status, body, floor)
                if problem:
                    self.wrong.append(f"{path}: {problem}: {body[:200]!r}")

    def _check(self, name: str, status: int, body: bytes, floor: str | None) -> str | None:
        if status != 200:
            return f"status {status}"
        try:
            answer = json.loads(body)
            version = answer["version"]
        except (ValueError, KeyError, TypeError):
            return "not a JSON object with a version"
        if not newer_or_same(version, floor):
            return f"{version} is older than {floor}, published before the request"
        if not newer_or_same(version, self._last.get(name)):
            return f"{version} came after {self._last[name]}"
        self._last[name] = version
        metadata = answer.get("metadata") or {}
        if metadata.get("version") != version:
            return "the metadata is another version's"
        if name == "prod" and metadata.get("stage") != "prod":
            return "not in stage prod"
        self.seen.add((version, metadata.get("artifact", {}).get("sha256", "")))
        return None


# wrk and the workers' memory --------------------------------------------------------------------


def run_wrk(url: str, seconds: float, script: Path | None = None) -> str:
    command = [*WRK, f"-d{max(1, round(seconds))}s", *(["-s", str(script)] if script else []), url]
    return subprocess.run(
        command, capture_output=True, text=True, check=True, timeout=seconds + 60, stdin=subprocess.DEVNULL
    ).stdout


@dataclass
class WrkFigures:
    requests: int = 0
    seconds: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)
    malformed: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, output: str) -> WrkFigures:
        figures = cls()
        for line in output.splitlines():
            if not line.startswith("stress "):
                continue
            _, what, *values = line.split()
            if what == "requests":
                figures.requests, figures.seconds = int(values[0]), int(values[1]) / 1e6
            elif what == "socket-errors":
                figures.socket_errors = dict(
                    zip(("connect", "read", "write", "timeout"), map(int, values), strict=True)
                )
            elif what == "status":
                figures.statuses[int(values[0])] += int(values[1])
            elif what == "version":
                figures.versions[values[0]] += int(values[1])
            elif what == "malformed":
                figures.malformed = int(values[0])
        if figures.requests == 0:
            raise RuntimeError(f"wrk printed no figures:\n{output}")
        return figures


def worker_pids(master: int, expected: int = WORKERS) -> list[int]:
    """The gunicorn workers, the children of its master process, once it has forked ``expected``
    of them (the server answers as soon as the first one is up)."""
    deadline = time.monotonic() + 10
    while True:
        pids: list[int] = []
        for task in Path(f"/proc/{master}/task").iterdir():
            pids += map(int, (task / "children").read_text().split())
        if len(pids) >= expected or time.monotonic() > deadline:
            return sorted(pids)
        time.sleep(0.05)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def read_pid(pidfile: Path) -> int:
    deadline = time.monotonic() + 10
    while not pidfile.exists() or not pidfile.read_text().strip():
        if time.monotonic() > deadline:
            raise RuntimeError("gunicorn wrote no pid file")
        time.sleep(0.05)
    return int(pidfile.read_text())


# one run ------------------------------------------------------------------------------------------


@dataclass
class StressResult:
    seconds: float
    wrk: WrkFigures | None
    statuses: Counter[int]  # every answer: wrk's and the checkers'
    checked: int  # answers the checkers validated one by one
    wrong: list[str]
    published: list[str]
    promoted: list[str]
    rss_start: dict[int, int]  # KiB, per worker pid, after the warm-up
    rss_end: dict[int, int]

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    @property
    def rss_growth_mib(self) -> float:
        return max(self.rss_end[pid] - self.rss_start[pid] for pid in self.rss_start) / 1024

    @property
    def ok(self) -> bool:
        return not self.server_errors and not self.wrong and self.rss_growth_mib < RSS_GROWTH_LIMIT_MIB

    def report(self) -> str:
        lines = []
        if self.wrk is not None:
            rate = self.wrk.requests / self.wrk.seconds
            lines.append(
                f"wrk: {self.wrk.requests:,} requests in {self.wrk.seconds:.1f} s, {rate:,.0f} req/s;"
                f" socket errors {self.wrk.socket_errors}"
            )
        lines += [
            f"answers by status: {dict(sorted(self.statuses.items()))}; 5xx: {self.server_errors}",
            f"checked one by one: {self.checked:,}; wrong answers: {len(self.wrong)}",
            f"published {len(self.published)} versions, promoted {len(self.promoted)} to prod",
            "worker RSS (MiB) after warm-up -> end: "
            + ", ".join(
                f"pid {pid} {self.rss_start[pid] / 1024:.1f} -> {self.rss_end[pid] / 1024:.1f}"
                for pid in self.rss_start
            ),
        ]
        lines += [f"  wrong: {problem}" for problem in self.wrong[:10]]
        return "\n".join(lines)


def run_stress(seconds: float, *, use_wrk: bool = True, checkers: int = 1) -> StressResult:
    """One stress run of about ``seconds`` (plus start-up and a second of warm-up); see the module."""
    with tempfile.TemporaryDirectory(prefix="stress-") as tmp:
        workdir = Path(tmp)
        root, log, pidfile, script = (workdir / name for name in ("registry", "log", "pid", "stress.lua"))
        ModelRegistry(root).save_model(version_of(0), model_of(0), {"stage": "prod"})
        script.write_text(LUA)
        env = {"MODEL_REGISTRY_ROOT": str(root), "GUNICORN_CMD_ARGS": f"--pid {pidfile}"}
        with gunicorn(env, workers=WORKERS) as base:
            workers = worker_pids(read_pid(pidfile))
            assert len(workers) == WORKERS, workers
            warm_up(base, use_wrk)
            rss_start = {pid: rss_kib(pid) for pid in workers}
            published = PublishedLog(log)
            team = [Checker(base, PublishedLog(log)) for _ in range(checkers)]
            stop = threading.Event()
            threads = [threading.Thread(target=checker.run, args=(stop,)) for checker in team]
            with publisher(root, log, seconds) as process:
                for thread in threads:
                    thread.start()
                try:
                    figures = (
                        WrkFigures.parse(run_wrk(f"{base}/models/latest", seconds, script))
                        if use_wrk
                        else None
                    )
                    process.wait(seconds + 30)
                finally:
                    stop.set()
                    for thread in threads:
                        thread.join(30)
            assert process.returncode == 0, f"the publisher failed ({process.returncode})"
            assert worker_pids(read_pid(pidfile)) == workers, "a worker was restarted"
            rss_end = {pid: rss_kib(pid) for pid in workers}
        published.refresh()
        statuses = sum((checker.statuses for checker in team), figures.statuses if figures else Counter())
        wrong = [problem for checker in team for problem in checker.wrong]
        wrong += check_against_registry(root, published, team, figures)
    return StressResult(
        seconds=seconds,
        wrk=figures,
        statuses=statuses,
        checked=sum(sum(checker.statuses.values()) for checker in team),
        wrong=wrong,
        published=published.published,
        promoted=published.promoted,
        rss_start=rss_start,
        rss_end=rss_end,
    )


def warm_up(base: str, use_wrk: bool) -> None:
    """Load both workers a little, so that the start RSS is that of a serving worker."""
    if use_wrk:
        run_wrk(f"{base}/models/latest", 1)
        return
    for _ in range(100):
        fetch(f"{base}/models/latest")


def check_against_registry(
    root: Path, log: PublishedLog, team: list[Checker], figures: WrkFigures | None
) -> list[str]:
    """Once everything stopped: every version an answer named was published (and with the artefact
    the registry holds), every promotion the publisher made is there."""
    registry = ModelRegistry(root)
    published = {version_of(0), *log.published}
    wrong = []
    if sorted(published, key=sort_key) != registry.list_versions():
        wrong.append(
            f"the registry lists {registry.list_versions()}, the publisher published {sorted(published)}"
        )
    for version, sha in {pair for checker in team for pair in checker.seen}:
        if version not in published or registry.get_metadata(version)["artifact"]["sha256"] != sha:
            wrong.append(f"an answer named {version} with artefact {sha[:12]}, which was never published")
    if figures is not None:
        wrong += [
            f"wrk: {n} answers named {v}, never published"
            for v, n in figures.versions.items()
            if v not in published
        ]
        wrong += [f"wrk: {figures.malformed} answers without one version"] if figures.malformed else []
    prod = registry.get_latest_version(stage="prod")
    if log.promoted and prod != log.promoted[-1]:
        wrong.append(f"the prod version is {prod}, not {log.promoted[-1]}: a promotion was lost")
    return wrong


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="how long wrk runs (default 30)")
    parser.add_argument("--checkers", type=int, default=2, help="checker threads (default 2)")
    parser.add_argument("--publish-into", help=argparse.SUPPRESS)  # the publisher process
    parser.add_argument("--log", help=argparse.SUPPRESS)
    parser.add_argument("--every", type=float, default=PUBLISH_EVERY, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.publish_into:
        publish(args.publish_into, args.log, args.seconds, args.every)
        return
    if shutil.which("wrk") is None:
        print("wrk is not installed: `apt-get install wrk` (Debian/Ubuntu), then run this again")
        return
    print(
        f"stress: gunicorn ({WORKERS} workers, the Dockerfile's command) on 127.0.0.1, {' '.join(WRK)}"
        f" -d{args.seconds:g}s on /models/latest, {args.checkers} checker threads, a version published"
        f" every {PUBLISH_EVERY * 1000:.0f} ms; {os.cpu_count()} CPUs shared by all"
    )
    result = run_stress(args.seconds, checkers=args.checkers)
    print(result.report())
    verdict = "ok" if result.ok else "FAILED"
    print(f"{verdict}: zero 5xx, zero wrong answers, RSS growth under {RSS_GROWTH_LIMIT_MIB} MiB per worker")
    sys.exit(0 if result.ok else 1)


if __name__ == "__main__":
    main()
