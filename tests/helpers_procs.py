"""What the tests run in other processes, and the odd models they publish.

Everything here is importable by name, so a child process (``fork`` or ``spawn``) can run it and
cloudpickle stores these classes by reference: the test process loads the models its children saved.
"""

from __future__ import annotations

import copy
import functools
import json
import multiprocessing
import os
import random
import shutil
import signal
import time
from collections.abc import Callable
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import cloudpickle
import fsspec
from servers import RegistryTarget

from flask_model_registry import ModelRegistry, VersionExistsError

#: How long a child waits for the signal to start, or blocks before it is killed.
PATIENCE = 30.0


def write_by_hand(
    root: Path,
    version: str,
    metadata: Any = None,
    model: Any = "hand-made model",
    *,
    raw: bytes | None = None,
) -> Path:
    """Make a version the way the seed registries were made: folder, then model.pkl, then metadata.

    ``metadata=None`` (and no ``raw``) leaves the folder without ``metadata.json``, as a copy in progress.
    """
    folder = Path(root, "versions", version)
    folder.mkdir(parents=True, exist_ok=True)
    if model is not None:
        (folder / "model.pkl").write_bytes(cloudpickle.dumps(model))
    if raw is None and metadata is not None:
        raw = json.dumps(metadata).encode()
    if raw is not None:
        (folder / "metadata.json").write_bytes(raw)
    return folder


def edit_in_place(path: Path, metadata: dict[str, Any]) -> None:
    """Rewrite a file the way an editor or a quick script does: ``open('w')`` and ``write``."""
    with open(path, "w") as f:
        f.write(json.dumps(metadata))


def copy_folder_then_metadata(source: Path, target: Path) -> None:
    """Copy a version in by hand as the SPEC asks: the folder and the model, ``metadata.json`` last."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("metadata.json"))
    shutil.copy(source / "metadata.json", target / "metadata.json")


def save(root: Path, version: str, model: Any, metadata: dict[str, Any] | None = None) -> None:
    """Publish a version from this process."""
    ModelRegistry(root).save_model(version, model, metadata)


def promote(root: Path, version: str, stage: str) -> None:
    """Move a version to a stage from this process."""
    ModelRegistry(root).set_stage(version, stage)


def promote_as(root: Path, version: str, stage: str, actor: str) -> None:
    """Move a version to a stage from this process, as ``actor``."""
    ModelRegistry(root).set_stage(version, stage, actor=actor)


def race_to_save(root: Path, version: str, payload: int, go: Any, results: Any) -> None:
    """Wait for ``go``, then try to publish ``version``; report ``("won" | "lost", payload)``."""
    registry = ModelRegistry(root)
    go.wait(PATIENCE)
    try:
        registry.save_model(version, {"payload": payload}, {"writer": payload})
    except VersionExistsError:
        results.put(("lost", payload))
    else:
        results.put(("won", payload))


def race_to_update(root: Path, version: str, key: str, go: Any, results: Any) -> None:
    """Wait for ``go``, then set one metadata key of ``version`` as actor ``key``; report the key."""
    registry = ModelRegistry(root)
    go.wait(PATIENCE)
    registry.update_metadata(version, {key: True}, actor=key)
    results.put(key)


# Models that make a save stop at a known moment, so the test can kill the writer right there. ----


def _block(ready: str, resume: str | None) -> None:
    """Touch ``ready``, then wait until ``resume`` exists (never, if None: the test kills us)."""
    Path(ready).touch()
    deadline = time.monotonic() + PATIENCE
    while resume is None or not os.path.exists(resume):
        if time.monotonic() > deadline:
            raise TimeoutError("the test neither killed this save nor let it go on")
        time.sleep(0.005)


class BlockWhenPickled:
    """Pickling this touches ``ready`` and blocks until the process is killed."""

    def __init__(self, ready: str) -> None:
        self.ready = ready

    def __reduce__(self) -> Any:
        _block(self.ready, None)
        raise AssertionError("unreachable")


_PICKLED = False


class MarkPickled:
    """Put last in a model: pickling it notes that the whole artefact has been pickled."""

    def __reduce__(self) -> Any:
        global _PICKLED
        _PICKLED = True
        return (MarkPickled, ())


class BlockOnceArtefactWritten(dict):
    """A metadata value (a plain JSON object to the registry) that blocks when it is serialised
    after the artefact was pickled: the registry writes ``metadata.json`` last, since it holds the
    artefact's sha256, so this stops a save between the artefact and the commit."""

    def __init__(self, ready: str, resume: str | None) -> None:
        super().__init__(note="blocked the save before its commit")
        self.ready = ready
        self.resume = resume

    def items(self) -> Any:
        if _PICKLED:
            _block(self.ready, self.resume)
        return super().items()


def save_until_killed(root: Path, version: str, moment: str, ready: str) -> None:
    """Publish ``version`` with a model or metadata that blocks at ``moment``, to be killed there."""
    model: Any
    metadata: dict[str, Any] = {}
    if moment == "before the artefact":
        model = BlockWhenPickled(ready)
    elif moment == "in the middle of the artefact":
        model = [os.urandom(4 << 20), BlockWhenPickled(ready)]
    elif moment == "after the artefact, before the commit":
        model = [os.urandom(1 << 20), MarkPickled()]
        metadata = {"blocker": BlockOnceArtefactWritten(ready, None)}
    else:
        raise ValueError(moment)
    ModelRegistry(root).save_model(version, model, metadata)


def save_with_a_pause_before_commit(root: Path, version: str, ready: str, resume: str) -> None:
    """Publish ``version``, touching ``ready`` once the artefact is written and going on to the
    commit only once ``resume`` exists."""
    metadata = {"blocker": BlockOnceArtefactWritten(ready, resume)}
    ModelRegistry(root).save_model(version, ["paused", MarkPickled()], metadata)


# A model that is slow to unpickle and counts how often it was loaded. -------------------------

LOADS = 0


def _rebuild_slowly() -> SlowToLoad:
    global LOADS
    LOADS += 1
    time.sleep(0.1)
    return SlowToLoad()


class SlowToLoad:
    """Unpickling takes 0.1 s and increments :data:`LOADS`."""

    def __reduce__(self) -> Any:
        return (_rebuild_slowly, ())


class Children:
    """Real child processes for one test: start them, run one to the end, race several."""

    #: The longest a test waits for a child.
    TIMEOUT = 30.0

    def __init__(self, context: BaseContext) -> None:
        self.context = context
        self._started: list[BaseProcess] = []

    def start(self, target: Callable[..., None], *args: Any) -> BaseProcess:
        """Start ``target(*args)`` in a child process."""
        child = self.context.Process(target=target, args=args, daemon=True)
        child.start()
        self._started.append(child)
        return child

    def run(self, target: Callable[..., None], *args: Any) -> None:
        """Run ``target(*args)`` in a child process and wait until it has finished cleanly."""
        child = self.start(target, *args)
        child.join(self.TIMEOUT)
        assert child.exitcode == 0, f"{target} in a child process ended with {child.exitcode}"

    def wait_until(self, child: BaseProcess, ready: Path) -> None:
        """Wait until ``child`` has touched ``ready`` (it must still be running then)."""
        deadline = time.monotonic() + self.TIMEOUT
        while not ready.exists():
            assert child.is_alive(), f"the child ended (exit code {child.exitcode}) before {ready.name}"
            assert time.monotonic() < deadline, f"the child never got to {ready.name}"
            time.sleep(0.005)

    def race(self, target: Callable[..., None], root: Path, version: str, contenders: list[Any]) -> list[Any]:
        """Start one child per contender, let them all go at once, and return what each reported."""
        go = self.context.Barrier(len(contenders) + 1)
        results = self.context.Queue()
        children = [self.start(target, root, version, c, go, results) for c in contenders]
        go.wait(self.TIMEOUT)
        reports = [results.get(timeout=self.TIMEOUT) for _ in contenders]
        for child in children:
            child.join(self.TIMEOUT)
            assert child.exitcode == 0, f"a contender ended with {child.exitcode}"
        return reports

    def kill_all(self) -> None:
        """Kill whatever is still running, so no child outlives its test."""
        for child in self._started:
            if child.is_alive():
                child.kill()
            child.join(self.TIMEOUT)


def count_calls(obj: object, name: str) -> list[None]:
    """Wrap ``obj.name`` so that each call appends to the returned list."""
    calls: list[None] = []
    original = getattr(obj, name)

    def counted(*args: Any) -> Any:
        calls.append(None)
        return original(*args)

    setattr(obj, name, counted)
    return calls


def list_unprivileged(root: str, results: Any) -> None:
    """Read the registry at ``root`` as an unprivileged user (root may read any file) and report
    each version's error (None when readable) and the model of 2.0.0."""
    if os.geteuid() == 0:
        os.setgid(65534)  # nobody / nogroup
        os.setuid(65534)
    registry = ModelRegistry(root)
    results.put(({e.version: e.error for e in registry.snapshot().entries}, registry.get_model("2.0.0")))


# Fault injection: children killed with SIGKILL at random moments (tests/test_faults.py). ----------

#: What the fork server imports once, so that each child it forks starts in milliseconds.
FORKSERVER_PRELOAD = ["helpers_procs", "servers", "flask_model_registry.storage.remote", "s3fs"]


def clean_context() -> BaseContext:
    """multiprocessing's fork server: children forked from a single-threaded server process rather
    than from the test process, whose object store servers run in threads; quick to start all the
    same, with the registry and the store clients imported once (:data:`FORKSERVER_PRELOAD`).

    Its children inherit the fork server's environment, not the test's: use :func:`reaching`."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(FORKSERVER_PRELOAD)  # no effect once the server runs: same list
    return context


def on_store(defaults: dict[str, dict[str, Any]], target: Callable[..., None], *args: Any) -> None:
    """Run ``target(*args)`` with fsspec's default options per protocol set to ``defaults``, as
    :meth:`servers.Store.child_env` sets them through the environment: a bare ``ModelRegistry(url)``
    reaches the store."""
    fsspec.config.conf.update(copy.deepcopy(defaults))
    target(*args)


def reaching(where: RegistryTarget, target: Callable[..., None]) -> Callable[..., None]:
    """``target`` as a child process runs it against ``where`` (see :func:`on_store`); picklable."""
    defaults = {where.store.scheme: where.store.storage_options} if where.store is not None else {}
    return functools.partial(on_store, defaults, target)


def _run_then_linger(done: Any, target: Callable[..., None], *args: Any) -> None:
    """Run ``target(*args)``, set ``done`` and wait to be killed: a child that is still there when
    the kill comes, so its pid is never one the system has given to another process."""
    target(*args)
    done.set()
    time.sleep(PATIENCE)


def _start_until_started(children: Children, target: Callable[..., None], *args: Any) -> tuple[Any, Any]:
    """Start ``target(*args, started)`` in a child (see :func:`_run_then_linger`) and wait until it
    sets ``started``, the moment the work under test begins; the child and its ``done`` event."""
    started, done = children.context.Event(), children.context.Event()
    child = children.start(_run_then_linger, done, target, *args, started)
    deadline = time.monotonic() + children.TIMEOUT
    while not started.wait(0.01):
        assert child.is_alive(), f"{target} ended (exit code {child.exitcode}) before it started"
        assert time.monotonic() < deadline, f"{target} never started"
    return child, done


def _kill(children: Children, child: BaseProcess) -> None:
    assert child.pid is not None and child.is_alive(), f"a child ended with {child.exitcode}"
    os.kill(child.pid, signal.SIGKILL)
    child.join(children.TIMEOUT)
    assert child.exitcode == -signal.SIGKILL, f"a child ended with {child.exitcode}"


def kill_at_random(children: Children, delay: float, target: Callable[..., None], *args: Any) -> bool:
    """Start ``target(*args, started)`` in a child; once it sets ``started`` wait ``delay`` seconds
    and ``kill -9`` it. True if it had finished by then."""
    child, done = _start_until_started(children, target, *args)
    time.sleep(delay)
    finished = done.is_set()
    _kill(children, child)
    return finished


def seconds_in_child(children: Children, target: Callable[..., None], *args: Any) -> float:
    """How long ``target(*args, started)`` takes in a child from ``started`` to its end."""
    child, done = _start_until_started(children, target, *args)
    began = time.perf_counter()
    assert done.wait(children.TIMEOUT), f"{target} did not finish"
    took = time.perf_counter() - began
    _kill(children, child)
    return took


def fault_model(version: str, size: int) -> dict[str, Any]:
    """The model the fault tests publish as ``version``: ``size`` bytes (a multiple of 1 KiB) that
    only it has, quick to make: a random KiB of its own, repeated."""
    return {"version": version, "payload": random.Random(version).randbytes(1024) * (size // 1024)}


def save_once_started(root: str, version: str, size: int, started: Any) -> None:
    """Publish :func:`fault_model` as writer ``child``, setting ``started`` as ``save_model`` begins
    (the registry has listed the root before: connecting is not part of the timed window)."""
    registry = ModelRegistry(root)
    registry.list_versions()
    model = fault_model(version, size)
    started.set()
    registry.save_model(version, model, {"writer": "child"})


def promotion_step(registry: ModelRegistry, version: str, n: int) -> None:
    """The ``n``-th promotion of ``version``: each one moves it to stage ``step-<n>``, odd ones with
    :meth:`~ModelRegistry.set_stage`, even ones with :meth:`~ModelRegistry.update_metadata` (also
    setting ``seq``); the actor is ``step-<n>``. So ``metadata.json`` tells which step landed last."""
    if n % 2:
        registry.set_stage(version, f"step-{n}", actor=f"step-{n}")
    else:
        registry.update_metadata(version, {"stage": f"step-{n}", "seq": n}, actor=f"step-{n}")


def state_after_step(published: dict[str, Any], n: int) -> dict[str, Any]:
    """``metadata.json`` once promotion step ``n`` has landed, of a version published with
    ``published`` (which must hold ``stage: step-0`` and ``seq: 0``)."""
    return {**published, "stage": f"step-{n}", "seq": n - n % 2}


def promote_until_killed(root: str, version: str, first: int, started: Any) -> None:
    """Take :func:`promotion_step` ``first``, ``first + 1``, … until killed (``started`` is set as
    the first one begins)."""
    registry = ModelRegistry(root)
    registry.get_metadata(version)
    started.set()
    for n in range(first, first + 100_000):
        promotion_step(registry, version, n)


def publish_each(root: str, versions: list[str], go: Any) -> None:
    """Wait for ``go``, then publish each of ``versions`` (a small :func:`fault_model`)."""
    registry = ModelRegistry(root)
    go.wait(PATIENCE)
    for version in versions:
        registry.save_model(version, fault_model(version, 1024), {"writer": os.getpid()})


def approve_each(root: str, version: str, keys: list[str], go: Any) -> None:
    """Wait for ``go``, then set each of ``keys`` to true in ``version``'s metadata, one edit each."""
    registry = ModelRegistry(root)
    go.wait(PATIENCE)
    for key in keys:
        registry.update_metadata(version, {key: True}, actor=key)


def promote_in_turns(root: str, version: str, name: str, count: int, started: Any) -> None:
    """Move ``version`` to stage ``<name>-<n>`` for n = 0, 1, … (``count`` times, 0: until killed),
    as actor ``name``; ``started`` is set as the first one begins."""
    registry = ModelRegistry(root)
    registry.get_metadata(version)
    started.set()
    for n in range(count or 100_000):
        registry.set_stage(version, f"{name}-{n}", actor=name)


def update_through(root: Path, version: str, keys: list[str], go: Any, results: Any) -> None:
    """Wait for ``go``, then set each of ``keys`` through the folder name ``version`` (which may be
    an alias); report ``(acknowledged keys, refused keys)``."""
    from flask_model_registry import VersionAliasError

    registry = ModelRegistry(root)
    go.wait(PATIENCE)
    acknowledged, refused = [], []
    for key in keys:
        try:
            registry.update_metadata(version, {key: True})
        except VersionAliasError:
            refused.append(key)
        else:
            acknowledged.append(key)
    results.put((acknowledged, refused))


def race_to_promote(root: str, version: str, stage: str, go: Any, results: Any) -> None:
    """Wait for ``go``, then move ``version`` to ``stage``; report the stage."""
    registry = ModelRegistry(root)
    registry.get_metadata(version)
    go.wait(PATIENCE)
    registry.set_stage(version, stage)
    results.put(stage)


# Audited writes killed at a named step, and writers with a wrong clock (tests/test_audit_crash.py,
# tests/test_audit.py). -----------------------------------------------------------------------------

#: The steps of an audited write after which :func:`kill_at_audit_step` kills the writer: its event
#: written as pending; the change committed; the version's own copy of the event written; both
#: copies written (the registry-wide one too), its pending file not yet removed.
AUDIT_STEPS = ("pending written", "committed", "per-version copy written", "both copies written")


def _killed() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(PATIENCE)  # SIGKILL is not caught: this is never reached


def kill_at_audit_step(registry: ModelRegistry, step: str) -> None:
    """Make ``registry``'s storage ``kill -9`` this process at ``step`` of its next audited write (one
    of :data:`AUDIT_STEPS`). The storage writes each name of an event all or nothing; this writes
    the two final names of the event one at a time, as the storage does, so a kill can fall between."""
    if step not in AUDIT_STEPS:
        raise ValueError(step)
    storage = registry.storage
    create, delete = storage.audit_create, storage.audit_delete
    own: list[str] = []  # this writer's pending event, once written (earlier writes are settling)

    def audit_create(names: list[str], data: bytes) -> None:
        if not own:
            create(names, data)
            if names[0].startswith(".pending/"):
                own.append(names[0])
                if step == "pending written":
                    _killed()
            return
        if step == "committed":
            _killed()
        for name in names:
            create([name], data)
            if step == "per-version copy written":
                _killed()

    def audit_delete(name: str) -> None:
        if own and name == own[0] and step == "both copies written":
            _killed()
        delete(name)

    storage.audit_create = audit_create  # type: ignore[method-assign]
    storage.audit_delete = audit_delete  # type: ignore[method-assign]


def change_killed_at(root: str, step: str, change: str, version: str) -> None:
    """Make one audited ``change`` of ``version`` (``publish`` it, or ``promote`` it to prod) and be
    killed at ``step`` of it (see :func:`kill_at_audit_step`)."""
    registry = ModelRegistry(root)
    registry.list_versions()
    kill_at_audit_step(registry, step)
    if change == "publish":
        registry.save_model(version, fault_model(version, 1024), {"stage": "staging"}, actor="killed")
    else:
        registry.set_stage(version, "prod", actor="killed")
    raise AssertionError(f"the write was not killed at {step!r}")


def publish_and_promote_until_killed(root: str, first: int, started: Any) -> None:
    """Publish ``0.<n>.0`` and move it to stage ``prod`` for n = ``first``, ``first + 1``, … until
    killed (``started`` is set as the first write begins)."""
    registry = ModelRegistry(root)
    registry.list_versions()
    started.set()
    for n in range(first, first + 100_000):
        registry.save_model(f"0.{n}.0", fault_model(f"0.{n}.0", 1024), {"stage": "staging"}, actor=f"w{n}")
        registry.set_stage(f"0.{n}.0", "prod", actor=f"w{n}")


def with_clock_off(seconds: float, target: Callable[..., None], *args: Any) -> None:
    """Run ``target(*args)`` as on a host whose clock is ``seconds`` off (negative: slow):
    ``time.time_ns`` and ``time.time`` of this process are."""
    real_ns, offset = time.time_ns, int(seconds * 1e9)
    time.time_ns = lambda: real_ns() + offset  # type: ignore[assignment]
    time.time = lambda: (real_ns() + offset) / 1e9  # type: ignore[assignment]
    target(*args)
