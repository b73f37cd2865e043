"""Faults and races with real processes, on a local disk and on an S3 server (moto on 127.0.0.1).

- ``kill -9`` at random moments of ``save_model`` and of promotions, many times: afterwards every
  listed version loads and verifies, nothing half-done is listed or audited, and a retry succeeds.
- Many writers (processes and a thread) and readers (threads) at once: every publication is listed
  exactly once, no promotion is lost, no reader sees a torn state, one of K racing savers wins.

The moments are random but seeded (``FAULT_SEED=<n> pytest tests/test_faults.py`` draws the same
numbers; where a kill lands also depends on the machine's timing), and every failure message names
the kill and the seed. Children come from a fork server (the ``clean_children``
fixture), so that starting one costs milliseconds and none inherits the S3 server's threads. Run
with ``-s`` to see the figures of each test.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from helpers_procs import (
    Children,
    approve_each,
    fault_model,
    kill_at_random,
    promote_in_turns,
    promote_until_killed,
    promotion_step,
    publish_each,
    race_to_promote,
    race_to_save,
    reaching,
    save_once_started,
    seconds_in_child,
    state_after_step,
)
from servers import RegistryTarget

from flask_model_registry import ModelRegistry, VersionExistsError, VersionNotFoundError
from flask_model_registry.versioning import sort_key

SEED = int(os.environ.get("FAULT_SEED", "6"))
#: How many times each test kills a child, per backend.
KILLS = {"local": 40, "s3": 15}
#: Big enough that a save takes a while (about 15 ms on a local disk, 50 ms on moto).
ARTEFACT_SIZE = 4 << 20
#: Kills of a promoting child come within this many promotions' time after its first one began.
PROMOTIONS_PER_CHILD = 8
#: The keys the registry writes into every metadata.json.
REGISTRY_KEYS = {"version", "created_at", "artifact"}

on_disk_and_s3 = pytest.mark.parametrize("registry_target", ["local", "s3"], indirect=True)


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    """This test's random moments, from :data:`SEED`."""
    return random.Random(f"{SEED}-{request.node.name}")


@contextmanager
def naming_the_kill(i: int, delay: float, into: str) -> Iterator[None]:
    """Name the kill, and the seed that replays the run, in the message of a failed check."""
    try:
        yield
    except Exception as exc:  # an error of the registry too: it is what the check found
        where = f"kill {i}, {delay * 1000:.1f} ms into {into} (FAULT_SEED={SEED})"
        raise AssertionError(f"{where}: {type(exc).__name__}: {exc}") from exc


def seconds_taken(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


class KillWindow:
    """Random kill delays, uniform between 0 and a width that adapts to how long the operation takes
    here: it shrinks after a child that had finished before its kill and grows after one killed in
    the middle, so that about 30 % of the kills come just after the end and the rest anywhere before
    (the fixed point of the two factors)."""

    SHRINK, GROW = 0.85, 1.07

    def __init__(self, rng: random.Random, width: float) -> None:
        self.rng, self.width = rng, width
        self.widths: list[float] = []

    def draw(self) -> float:
        self.widths.append(self.width)
        return self.rng.uniform(0, self.width)

    def adapt(self, finished: bool) -> None:
        self.width *= self.SHRINK if finished else self.GROW

    def __str__(self) -> str:
        return f"within {min(self.widths) * 1000:.0f}-{max(self.widths) * 1000:.0f} ms"


def check_metadata(registry: ModelRegistry, version: str) -> dict[str, Any]:
    """``version``'s metadata: a JSON object with the keys the registry writes, of this version."""
    metadata = registry.get_metadata(version)
    assert set(metadata) >= REGISTRY_KEYS and metadata["version"] == version, metadata
    return metadata


def check_whole(registry: ModelRegistry, version: str, model: Any = None) -> dict[str, Any]:
    """``version`` has registry metadata, its artefact verifies and loads (as ``model``, if given)."""
    metadata = check_metadata(registry, version)
    assert registry.verify(version) == metadata["artifact"]["sha256"]
    loaded = registry.get_model(version)
    assert model is None or loaded == model
    return metadata


def audit_trail(registry: ModelRegistry, version: str) -> list[dict[str, Any]]:
    """``version``'s audit events; none for a version that is not listed."""
    try:
        return registry.history(version)
    except VersionNotFoundError:
        return []


# kill -9 while saving ---------------------------------------------------------------------------


def check_after_killed_save(
    target: RegistryTarget, readers: list[ModelRegistry], version: str, before: list[str], finished: bool
) -> str:
    """What a save killed at some moment left: the version whole and the child's, or nothing listed,
    nothing audited and nothing but the child's artefact stored; returns which of the two."""
    for reader in readers:
        assert reader.list_versions() in (before, [*before, version])
    registry = readers[0]
    committed = version in registry.list_versions()
    assert committed or not finished, "a save that returned is not listed"
    events = audit_trail(registry, version)
    if not committed:
        assert events == [], "an audit event for a version that was never published"
        leftovers = target.stored_names("versions", version)  # local: nothing (a hidden folder beside)
        assert all(name.startswith("model-") and name.endswith(".pkl") for name in leftovers), leftovers
        return "killed before the commit: not listed"
    metadata = check_whole(registry, version, fault_model(version, ARTEFACT_SIZE))
    assert metadata["writer"] == "child"
    assert [e["action"] for e in events] == ["publish"], "a published version without its event"
    assert events[0]["after"] == metadata
    if finished:
        return "finished before the kill"
    return "killed after the commit"


def retry_save(registry: ModelRegistry, version: str, committed: bool) -> None:
    """The same save again, from the test process: refused only if the child's save committed."""
    model = fault_model(version, ARTEFACT_SIZE)
    if committed:
        with pytest.raises(VersionExistsError):
            registry.save_model(version, model, {"writer": "parent"})
        assert registry.get_metadata(version)["writer"] == "child"
    else:
        registry.save_model(version, model, {"writer": "parent"})
        assert check_whole(registry, version, model)["writer"] == "parent"


@on_disk_and_s3
def test_a_save_killed_at_a_random_moment_leaves_only_whole_versions_and_a_retry_succeeds(
    registry_target: RegistryTarget, clean_children: Children, rng: random.Random
) -> None:
    # One registry watches from the start, another comes in afresh: both see the same.
    # full_refresh=0: a writer killed between its commit and its manifest update is found by a full listing
    registry, other = (registry_target.open(refresh_interval=0, full_refresh=0) for _ in range(2))
    save = reaching(registry_target, save_once_started)
    listed = ["0.0.1"]  # saved by a child that is not killed, to time a save
    took = seconds_in_child(clean_children, save, registry_target.root, "0.0.1", ARTEFACT_SIZE)
    window = KillWindow(rng, took)
    outcomes: Counter[str] = Counter()
    for i in range(KILLS[registry_target.backend]):
        version, delay = f"1.0.{i}", window.draw()
        finished = kill_at_random(clean_children, delay, save, registry_target.root, version, ARTEFACT_SIZE)
        window.adapt(finished)
        with naming_the_kill(i, delay, "a save"):
            outcome = check_after_killed_save(registry_target, [registry, other], version, listed, finished)
            retry_save(registry, version, committed=outcome != "killed before the commit: not listed")
        outcomes[outcome] += 1
        listed.append(version)

    reader = registry_target.open()
    assert reader.list_versions() == listed
    for version in listed:
        check_whole(reader, version, fault_model(version, ARTEFACT_SIZE))
    publications = Counter(e["version"] for e in reader.history())
    assert set(publications) <= set(listed) and set(publications.values()) == {1}, publications
    if not registry_target.is_remote:
        hidden = set(registry_target.stored_names("versions")) - set(listed)
        assert all(name.startswith(".staging-") for name in hidden), hidden
    print(
        f"\n{registry_target.backend}: {sum(outcomes.values())} saves killed {window} of their"
        f" start: {dict(outcomes)}"
    )
    assert outcomes["killed before the commit: not listed"] > 0, "no kill landed inside a save"


# kill -9 while promoting --------------------------------------------------------------------------


def expected_event(published: dict[str, Any], n: int) -> dict[str, Any]:
    """The audit event of :func:`helpers_procs.promotion_step` ``n``."""
    old, new = state_after_step(published, n - 1), state_after_step(published, n)
    changed = [key for key in new if old[key] != new[key]]
    return {
        "action": "set_stage" if n % 2 else "update_metadata",
        "actor": f"step-{n}",
        "before": {key: old[key] for key in changed},
        "after": {key: new[key] for key in changed},
    }


def recorded_steps(registry: ModelRegistry, version: str, published: dict[str, Any]) -> list[int]:
    """The promotion steps of ``version`` that its audit trail records, each checked in full."""
    steps = []
    for event in registry.history(version)[1:]:  # after the publish
        n = int(event["actor"].removeprefix("step-"))
        assert {key: event[key] for key in ("action", "actor", "before", "after")} == expected_event(
            published, n
        )
        steps.append(n)
    return steps


def hidden_files(target: RegistryTarget, *parts: str) -> list[str]:
    return [name for name in target.stored_names(*parts) if name.startswith(".")]


def check_after_killed_promotions(registry: ModelRegistry, published: dict[str, Any], landed: int) -> int:
    """What a child promoting from step ``landed + 1`` on left when killed: metadata.json whole, as
    after some step (returned), and every step that landed audited, in order, also the one the
    child may have been killed right after (its pending event is finalised by this reader). A step
    that did not land is never audited."""
    metadata = registry.get_metadata("1.0.0")
    step = int(metadata["stage"].removeprefix("step-"))
    assert step >= landed, f"step {step} went back before {landed}"
    assert metadata == state_after_step(published, step), "metadata.json is neither old nor new"
    recorded = recorded_steps(registry, "1.0.0", published)
    assert recorded == list(range(1, step + 1)), recorded
    return step


@on_disk_and_s3
def test_a_promotion_killed_at_a_random_moment_lands_whole_or_not_at_all(
    registry_target: RegistryTarget, clean_children: Children, rng: random.Random
) -> None:
    # full_refresh=0: a writer killed between its commit and its manifest update is found by a full listing
    registry, other = (registry_target.open(refresh_interval=0, full_refresh=0) for _ in range(2))
    published = registry.save_model("1.0.0", "model", {"owner": "ml", "stage": "step-0", "seq": 0})
    step_time = min(seconds_taken(lambda n=n: promotion_step(registry, "1.0.0", n)) for n in (1, 2))
    window = PROMOTIONS_PER_CHILD * step_time
    landed, by_children, temporaries = 2, 0, 0
    promote = reaching(registry_target, promote_until_killed)
    kills = KILLS[registry_target.backend]
    for i in range(kills):
        delay = rng.uniform(0, window)
        kill_at_random(clean_children, delay, promote, registry_target.root, "1.0.0", landed + 1)
        with naming_the_kill(i, delay, "promotions"):
            step = check_after_killed_promotions(registry, published, landed)
            by_children += step - landed
            temporaries += len(hidden_files(registry_target, "versions", "1.0.0"))
            promotion_step(registry, "1.0.0", step + 1)  # the retry: the next step goes through
            landed = step + 1
            assert other.get_metadata("1.0.0") == state_after_step(published, landed)
            assert hidden_files(registry_target, "versions", "1.0.0") == [], "dead writers' files stay"

    assert recorded_steps(registry, "1.0.0", published)[-1] == landed
    check_whole(registry_target.open(), "1.0.0", "model")
    print(
        f"\n{registry_target.backend}: {kills} promoting children killed within {window * 1000:.0f} ms;"
        f" {by_children} promotions landed before the kills, each with its audit event (the"
        f" trail checked in full against the metadata after each kill, {landed + 1} events at the end);"
        f" {temporaries} temporary files of killed writers removed by the next promotion"
    )
    assert by_children > 0


# Racing promotions: the trail follows the real order of the changes -------------------------------


def check_chain(registry: ModelRegistry, version: str) -> int:
    """``version``'s trail links up: ids ascending, each event's ``after`` is the next one's
    ``before`` (for the stage every event here changes), the last one's is the current metadata;
    returns how many events were checked."""
    events = registry.history(version)
    assert [e["id"] for e in events] == sorted({e["id"] for e in events}), "ids not unique and ordered"
    for earlier, later in itertools.pairwise(events):
        assert earlier["after"]["stage"] == later["before"]["stage"], (earlier, later)
    assert events[-1]["after"]["stage"] == registry.get_metadata(version)["stage"]
    return len(events)


#: Processes promoting one version at once.
RACING_PROMOTERS = 3


@on_disk_and_s3
def test_racing_promotions_leave_a_chained_trail(
    registry_target: RegistryTarget, clean_children: Children
) -> None:
    registry_target.open().save_model("1.0.0", "model", {"stage": "none"})
    each = EACH[registry_target.backend] * 2
    promote = reaching(registry_target, promote_in_turns)
    started = [clean_children.context.Event() for _ in range(RACING_PROMOTERS)]  # kept: children load them
    racers = [
        clean_children.start(promote, registry_target.root, "1.0.0", f"p{i}", each, event)
        for i, event in enumerate(started)
    ]
    for racer in racers:
        racer.join(Children.TIMEOUT)
        assert racer.exitcode == 0
    reader = registry_target.open()
    assert check_chain(reader, "1.0.0") == 1 + RACING_PROMOTERS * each


@on_disk_and_s3
def test_the_same_promotion_raced_by_several_processes_is_recorded_once(
    registry_target: RegistryTarget, clean_children: Children
) -> None:
    registry_target.open().save_model("1.0.0", "model", {"stage": "none"})
    rounds = ["prod", "staging", "prod", "archived"]
    for stage in rounds:
        race = reaching(registry_target, race_to_promote)
        assert clean_children.race(race, registry_target.root, "1.0.0", [stage] * RACING_PROMOTERS)
    reader = registry_target.open()
    assert check_chain(reader, "1.0.0") == 1 + len(rounds)
    assert [e["after"]["stage"] for e in reader.history("1.0.0")[1:]] == rounds


@on_disk_and_s3
def test_racing_promotions_killed_at_random_keep_every_change_and_its_event(
    registry_target: RegistryTarget, clean_children: Children, rng: random.Random
) -> None:
    registry = registry_target.open(refresh_interval=0)
    registry.save_model("1.0.0", "model", {"stage": "none"})
    window = 8 * seconds_taken(lambda: registry.set_stage("1.0.0", "warm-up"))
    promote = reaching(registry_target, promote_in_turns)
    rounds, checked = KILLS[registry_target.backend] // 3, 0
    for i in range(rounds):
        delay = rng.uniform(0, window)
        started = [clean_children.context.Event() for _ in range(RACING_PROMOTERS)]
        racers = [
            clean_children.start(promote, registry_target.root, "1.0.0", f"r{i}p{k}", 0, event)
            for k, event in enumerate(started)
        ]
        for event in started:
            assert event.wait(Children.TIMEOUT)
        time.sleep(delay)
        for racer in racers:
            assert racer.pid is not None
            os.kill(racer.pid, signal.SIGKILL)
        for racer in racers:
            racer.join(Children.TIMEOUT)
        with naming_the_kill(i, delay, "racing promotions"):
            checked += check_chain(registry_target.open(), "1.0.0")
            registry.set_stage("1.0.0", f"after-round-{i}")  # the next writer goes on from there
    final = check_chain(registry_target.open(), "1.0.0")
    print(
        f"\n{registry_target.backend}: {rounds * RACING_PROMOTERS} racing promoters killed at once"
        f" within {window * 1000:.0f} ms in {rounds} rounds; {checked} events checked link to link and"
        f" against the metadata; {final} events in the final trail"
    )


# Many writers and readers at once ---------------------------------------------------------------

#: Publishing processes, promoting processes (the test process promotes from a thread too), processes
#: racing to save one version, and reader threads.
PUBLISHERS, PROMOTERS, RACERS, READERS = 3, 3, 4, 4
#: The version the racers save.
RACED = "3.0.0"
#: What each publisher publishes and each promoter sets, per backend.
EACH = {"local": 8, "s3": 4}


class Readers:
    """Threads that read the registry in a loop while the block runs, checking what they see: the
    listing only grows and stays ordered, metadata is whole, approvals of ``watched`` are never lost,
    the latest version never goes back, models load. Anything else than VersionNotFoundError is an
    error (an AssertionError included)."""

    def __init__(self, registries: list[ModelRegistry], watched: str) -> None:
        self.registries, self.watched = registries, watched
        self.errors: list[str] = []
        self.rounds = 0
        self._stop = threading.Event()

    @contextmanager
    def reading(self) -> Iterator[Readers]:
        threads = [threading.Thread(target=self._read, args=(r, i)) for i, r in enumerate(self.registries)]
        for thread in threads:
            thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            for thread in threads:
                thread.join(60)

    def _read(self, registry: ModelRegistry, seed: int) -> None:
        rng = random.Random(seed)
        state: dict[str, Any] = {"versions": [], "latest": None, "approvals": set()}
        while not self._stop.is_set():
            try:
                self._check(registry, rng, state)
                self.rounds += 1
            except VersionNotFoundError:
                continue
            except Exception:
                self.errors.append(traceback.format_exc(limit=3))

    def _check(self, registry: ModelRegistry, rng: random.Random, state: dict[str, Any]) -> None:
        versions = registry.list_versions()
        assert versions == sorted(set(versions), key=sort_key), versions
        assert set(state["versions"]) <= set(versions), "a listed version vanished"
        state["versions"] = versions
        version = rng.choice(versions)
        check_metadata(registry, version)
        model = registry.get_model(version)
        if version != RACED:  # the racers' models are {"payload": <n>}
            assert model == fault_model(version, 1024)
        approvals = {key for key in registry.get_metadata(self.watched) if key.startswith("approved_")}
        assert state["approvals"] <= approvals, f"approvals lost: {state['approvals'] - approvals}"
        state["approvals"] = approvals
        latest = registry.get_latest_version()
        assert state["latest"] is None or sort_key(latest) >= sort_key(state["latest"]), latest
        state["latest"] = latest
        assert registry.get_latest_model() is not None


@on_disk_and_s3
def test_many_writers_and_readers_at_once(registry_target: RegistryTarget, clean_children: Children) -> None:
    each, root = EACH[registry_target.backend], registry_target.root
    registry_target.open().save_model("1.0.0", fault_model("1.0.0", 1024), {"owner": "ml"})
    publications = [[f"2.{p}.{j}" for j in range(each)] for p in range(PUBLISHERS)]
    approvals = [[f"approved_{k}_{j}" for j in range(each)] for k in range(PROMOTERS + 1)]
    go = clean_children.context.Barrier(PUBLISHERS + PROMOTERS + RACERS + 2)  # + a thread, + the test
    results = clean_children.context.Queue()
    writers = [
        clean_children.start(reaching(registry_target, publish_each), root, versions, go)
        for versions in publications
    ]
    writers += [
        clean_children.start(reaching(registry_target, approve_each), root, "1.0.0", keys, go)
        for keys in approvals[:PROMOTERS]
    ]
    writers += [
        clean_children.start(reaching(registry_target, race_to_save), root, RACED, payload, go, results)
        for payload in range(RACERS)
    ]

    failures: list[BaseException] = []

    def promote_from_a_thread() -> None:
        host = registry_target.open()
        go.wait(Children.TIMEOUT)
        try:
            host.set_stage("1.0.0", "prod")
            for key in approvals[-1]:
                host.update_metadata("1.0.0", {key: True}, actor=key)
        except BaseException as exc:  # said by the test, not lost in a thread
            failures.append(exc)

    shared = registry_target.open(refresh_interval=0.05)  # threads of one worker share a registry
    own = [registry_target.open(refresh_interval=0.05) for _ in range(READERS - 2)]
    readers = Readers([shared, shared, *own], "1.0.0")
    started = time.perf_counter()
    with readers.reading():
        promoter = threading.Thread(target=promote_from_a_thread)
        promoter.start()
        go.wait(Children.TIMEOUT)
        promoter.join(Children.TIMEOUT)
        assert not promoter.is_alive(), "the promoting thread did not finish in time"
        assert failures == [], f"the promoting thread failed: {failures!r}"
        for writer in writers:
            writer.join(Children.TIMEOUT)
            assert writer.exitcode == 0, f"a writer ended with {writer.exitcode}"
        races = [results.get(timeout=Children.TIMEOUT) for _ in range(RACERS)]
    elapsed = time.perf_counter() - started
    assert readers.errors == [], "\n".join(readers.errors[:5])
    assert readers.rounds > 0

    final = registry_target.open()
    published = ["1.0.0", *(v for versions in publications for v in versions), RACED]
    assert final.list_versions() == sorted(published, key=sort_key), "each publication listed once"
    for version in published:
        check_whole(final, version)
    metadata = final.get_metadata("1.0.0")
    assert metadata["stage"] == "prod" and metadata["owner"] == "ml"
    assert {key for key in metadata if key.startswith("approved_")} == {k for ks in approvals for k in ks}
    assert Counter(outcome for outcome, _ in races) == {"won": 1, "lost": RACERS - 1}, races
    ((_, winner),) = [report for report in races if report[0] == "won"]
    assert final.get_model(RACED) == {"payload": winner}
    assert final.get_metadata(RACED)["writer"] == winner
    actions = Counter(e["action"] for e in final.history())
    edits = sum(map(len, approvals))
    assert actions == {"publish": len(published), "update_metadata": edits, "set_stage": 1}, actions
    print(
        f"\n{registry_target.backend}: in {elapsed:.1f} s, {PUBLISHERS} processes published"
        f" {PUBLISHERS * each} versions, {PROMOTERS} processes and a thread made {edits + 1} promotions"
        f" and edits of one version, {RACERS} processes raced for one version (1 won),"
        f" {READERS} reader threads made {readers.rounds} rounds of checks"
    )
