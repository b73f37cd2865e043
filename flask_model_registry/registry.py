"""``ModelRegistry``: discovery, caching and publishing of versions, over any storage.

Reads go through an immutable :class:`~.snapshot.Snapshot` of every committed version and its
metadata. Before each read the storage is asked, cheaply, whether anything may have changed (an
inotify queue on local disk, the refresh interval on object storage); only then is it rescanned,
and only metadata whose stamp changed is read again. Artefacts load through :mod:`.loading`.
"""

from __future__ import annotations

import getpass
import logging
import os
import platform
import random
import socket
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar, Protocol

import cloudpickle

from . import approvals, audit
from . import metadata as md
from .errors import (
    ConflictError,
    CorruptVersionError,
    PreconditionFailedError,
    StorageUnavailableError,
    VersionNotFoundError,
)
from .events import Observers, RegistryObserver
from .loading import HashingWriter, artifact_of, verify_artifact
from .models import LoadedModel, LoadedModels
from .pickle_allow import PickleAllowList
from .rules import Promotion, StageRules
from .signing import Signatures, sign_files, signature_record
from .snapshot import EMPTY, Entry, Snapshot, entry_from
from .storage import Storage, open_storage
from .versioning import check_version

log = logging.getLogger(__name__)

#: How many loaded models :meth:`ModelRegistry.get_model` keeps by default.
DEFAULT_MODEL_CACHE_SIZE = 4
#: The share of traffic a version flagged ``"canary": true`` takes in :meth:`ModelRegistry.route`.
DEFAULT_CANARY_WEIGHT = 0.1
#: Stages whose versions nothing serves: never protected from a delete (:mod:`.lifecycle`).
DEFAULT_RETIRED_STAGES = ("archived",)
_CAS_ATTEMPTS = 50
#: What a conditional change expects: the metadata it was decided on, or a test of the current one.
Expected = Mapping[str, Any] | Callable[[dict[str, Any]], bool]


def default_actor() -> str:
    """Who is acting when nobody says: ``user@host`` of this process."""
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry, as in many containers
        user = f"uid{os.getuid()}" if hasattr(os, "getuid") else "unknown"
    return f"{user}@{socket.gethostname()}"


class Routing(Protocol):
    """What :meth:`ModelRegistry.route` delegates to; :mod:`.routing`, above this module, builds it."""

    def route(self, key: Any, stage: str | None, include_prerelease: bool) -> LoadedModel: ...

    #: The share of traffic a version flagged ``"canary": true`` takes.
    default_weight: float

    def last_served(self, stage: str | None, include_prerelease: bool) -> str | None: ...


class Lifecycle(Protocol):
    """What ``delete_version`` and ``gc`` delegate to; :mod:`.lifecycle`, above, builds it."""

    def delete_version(self, version: str, actor: str | None, expected: Expected | None) -> None: ...
    def gc(self, keep: int | None, age: timedelta | None, dry: bool, actor: str | None) -> dict[str, Any]: ...


class ModelRegistry:
    """Versioned models under ``<root>/versions/<semver>/``, on local disk or object storage.

    ``root`` is a path or an fsspec URL (``s3://bucket/prefix``); None means the environment variable
    ``MODEL_REGISTRY_ROOT``, else ``./registry``. ``refresh_interval`` bounds how long a change made
    elsewhere may stay unseen (local disk: 0, always fresh). ``full_refresh`` (object storage): the
    most seconds between full listings, which find copies made by hand (default 60; between them a
    refresh asks the registry's manifest). ``allowed_stages`` turns an unknown stage name into an
    error. ``watch`` enables change notification on local disk. ``pickle_allow`` lists the modules
    an artefact's pickle may import from (see :mod:`.pickle_allow`); None loads any pickle.
    ``stage_rules``: what a version must satisfy to enter a stage (:mod:`.rules`; a malformed rule
    is a :class:`StageRuleError`).
    ``retired_stages``: stages whose versions are never protected from a delete (``["archived"]``).
    ``signing_key`` signs every save; ``trusted_keys`` and ``require_signature``: see :mod:`.signing`.
    """

    #: Builds each registry's router from the registry, its observers and its default canary weight
    #: (as Flask's ``response_class``). The package sets it to :class:`.routing.Router`: routing sits
    #: above the registry, so this module never imports it.
    router_class: ClassVar[Callable[[ModelRegistry, Observers, float], Routing]]
    #: Builds each registry's reader of its past (what was live when, rollbacks) the same way:
    #: :class:`.timeline.Timelines`.
    timelines_class: ClassVar[Callable[[ModelRegistry], Any]]
    #: Builds the delete and retention of a registry (:class:`.lifecycle.Lifecycle`), likewise.
    lifecycle_class: ClassVar[Callable[[ModelRegistry], Lifecycle]]

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        storage_options: Mapping[str, Any] | None = None,
        refresh_interval: float | None = None,
        full_refresh: float | None = None,
        allowed_stages: Collection[str] | None = None,
        model_cache_size: int = DEFAULT_MODEL_CACHE_SIZE,
        watch: bool = True,
        storage: Storage | None = None,
        canary_weight: float = DEFAULT_CANARY_WEIGHT,
        stage_rules: Mapping[str, Any] | None = None,
        pickle_allow: Iterable[str] | None = None,
        retired_stages: Collection[str] = DEFAULT_RETIRED_STAGES,
        signing_key: str | os.PathLike[str] | None = None,
        trusted_keys: str | Iterable[str | os.PathLike[str]] | None = None,
        require_signature: bool | None = None,
    ) -> None:
        if root is None:
            root = os.environ.get("MODEL_REGISTRY_ROOT") or "registry"
        self.root = os.fspath(root)
        self.storage = storage or open_storage(
            self.root,
            storage_options=storage_options,
            refresh_interval=refresh_interval,
            full_refresh=full_refresh,
            watch=watch,
        )
        self.allowed_stages = frozenset(allowed_stages) if allowed_stages is not None else None
        if self.allowed_stages is not None:
            for stage in self.allowed_stages:
                md.check_stage(stage, None)
        self.stage_rules = StageRules(stage_rules, self.allowed_stages)
        if isinstance(retired_stages, str):
            raise TypeError("retired_stages must be a collection of stage names, not a string")
        self.retired_stages = frozenset(md.check_stage(stage, None) for stage in retired_stages)
        self.audit = audit.AuditTrail(self.storage)
        #: What an artefact's pickle may import; None: anything (no scan).
        self.pickle_allow = PickleAllowList(pickle_allow) if pickle_allow is not None else None
        self.signatures = Signatures(self.storage, signing_key, trusted_keys, require_signature)
        self._lock = threading.Lock()
        self._unchanged = self.storage.unchanged
        self._rescanning = False
        self._snapshot = EMPTY
        self._stale = True  # set after our own writes: a process always reads what it wrote
        self._scanned = False  # whether a scan ever succeeded (there is a state to fall back on)
        self._observers = Observers()
        self._loaded = LoadedModels(self, self._observers, model_cache_size)
        #: Why the storage did not answer the last refresh; None when it did (see ``/health``).
        self.last_refresh_error: Exception | None = None
        self._router = self.router_class(self, self._observers, canary_weight)
        self._past = self.timelines_class(self)

    def __repr__(self) -> str:
        return f"<ModelRegistry {self.storage.describe()}>"

    # discovery ------------------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """The current state, rescanning first if the storage may have changed."""
        # Lock-free while nothing happened. The order matters: the probe first, then the flags
        # (a rescan raises _rescanning before it consumes the storage's signal), then the state.
        if self._unchanged() and not (self._stale or self._rescanning):
            return self._snapshot
        with self._lock:
            self._rescanning = True
            stale = self._stale
            try:
                if stale or self.storage.may_have_changed():
                    self._stale = False  # before the rescan: a write during it marks it again
                    old, self._snapshot = self._snapshot, self._rescan(self._snapshot)
                    self.last_refresh_error = None
                    if self._snapshot is not old or not self._scanned:
                        self._observers.each("refreshed", self, len(self._snapshot.entries))
                    self._scanned = True
            except Exception as exc:
                previous, self.last_refresh_error = self.last_refresh_error, exc
                self._observers.each("refresh_failed", self, exc)
                # A failed rescan saw nothing: what asked for it still stands, and with no state
                # yet the next call tries again.
                self.storage.rescan_failed()
                self._stale = self._stale or stale or not self._scanned
                if not self._scanned:
                    raise
                # A store that fails for a moment (a timeout, a 503) must not take the
                # service down: keep the last state and try again at the next refresh (logged
                # once while the failure stays the same).
                if previous is None or str(previous) != str(exc):
                    log.warning("refresh failed, serving the last state: %s", exc)
            finally:
                self._rescanning = False
            return self._snapshot

    def mark_changed(self) -> None:
        """Note a write made through the storage by a capability above the registry (a delete):
        the next read rescans first, so a process always reads what it wrote."""
        self._stale = True

    def _rescan(self, old: Snapshot) -> Snapshot:
        changes = self.storage.refresh(old.stamps)
        if changes is None:
            return old
        kept, fetched = changes
        previous = old.by_version
        entries = [previous[v] for v in kept]
        entries += [entry_from(v, got) for v, got in fetched.items()]
        entries.sort(key=lambda e: e.key)
        snap = Snapshot(tuple(entries), {e.version: e for e in entries})
        self._loaded.forget_all_but(entries)
        return snap

    def list_versions(self) -> list[str]:
        """Committed versions in ascending SemVer precedence (build metadata breaks ties)."""
        snap = self.snapshot()
        return list(snap.memo("versions", lambda: tuple(e.version for e in snap.entries)))

    def get_latest_version(
        self, stage: str | None = None, include_prerelease: bool = False, as_of: datetime | None = None
    ) -> str | None:
        """The highest version (in ``stage`` if given); prereleases only when asked; else None.
        ``as_of`` (an aware datetime): the one it was then, from the audit trail (:mod:`.timeline`)."""
        if as_of is not None:
            return self._past.latest_as_of(stage, include_prerelease, as_of)
        entry = self.snapshot().latest(stage, include_prerelease)
        return entry.version if entry is not None else None

    def _entry(self, version: str) -> Entry:
        entry = self.snapshot().by_version.get(version) if type(version) is str else None
        if entry is None:
            check_version(version)  # InvalidVersionError first; a valid name is simply missing
            raise VersionNotFoundError(f"version {version} not found")
        return entry

    def get_metadata(self, version: str) -> dict[str, Any]:
        """A copy of the version's ``metadata.json``; never touches the artefact."""
        return md.copy_json(self._entry(version).require_metadata())

    # models ---------------------------------------------------------------------------------------

    def get_model(self, version: str) -> Any:
        """Load the version's artefact (after checking its sha256, when recorded); cached."""
        return self._loaded.model(self._entry(version))

    def get_latest_model(self, stage: str | None = None, include_prerelease: bool = False) -> Any:
        """The model of :meth:`get_latest_version`; keeps serving the last good one if it fails."""
        return self.get_latest(stage, include_prerelease).model

    def get_latest(self, stage: str | None = None, include_prerelease: bool = False) -> LoadedModel:
        """:meth:`get_latest_model` with the version it comes from, read together: label a prediction
        with this version, not with a separate :meth:`get_latest_version` that may already be newer
        (or name a version that failed to load while the last good one is served)."""
        return self._loaded.latest(self.snapshot(), stage, include_prerelease)

    def route(
        self, key: str | bytes | int | None = None, stage: str | None = None, include_prerelease: bool = False
    ) -> LoadedModel:
        """The model a request goes to while a canary takes a share of ``stage``'s traffic: the
        stable version or the canary, the same for the same ``key`` everywhere (random without one).
        See :mod:`flask_model_registry.routing`; ``get_latest*`` ignore canaries."""
        return self._router.route(key, stage, include_prerelease)

    @property
    def canary_weight(self) -> float:
        """The share of traffic a version flagged ``"canary": true`` takes in :meth:`route`."""
        return self._router.default_weight

    def load_failure(self, version: str) -> CorruptVersionError | None:
        """Why this process failed to load ``version`` as it is now (remembered until its metadata
        changes), or None: it loaded, or was never tried here."""
        entry = self.snapshot().by_version.get(version)
        return self._loaded.failure(entry) if entry is not None else None

    def last_routed(self, stage: str | None = None) -> str | None:
        """The stable version :meth:`route` last served for ``stage`` in this process (it keeps
        serving it while a newer one fails to load); None if this process never routed it."""
        return self._router.last_served(stage, False)

    def add_observer(self, observer: RegistryObserver) -> None:
        """Tell ``observer`` of loads, refreshes and routing answers (see :mod:`.events`)."""
        self._observers.add(observer)

    def remove_observer(self, observer: RegistryObserver) -> None:
        """Stop telling ``observer``."""
        self._observers.remove(observer)

    def verify(self, version: str) -> str | None:
        """Re-hash a version's artefact: its sha256, or None for a version that records none.

        Raises :class:`CorruptVersionError` on a mismatch or a missing artefact; never unpickles.
        """
        file, sha, _ = artifact_of(version, self._entry(version).require_metadata())
        verify_artifact(self.storage, version, file, sha)
        return sha

    def signature(self, version: str) -> dict[str, str | None]:
        """The version's signature ``{"status", "key"}`` (see :mod:`.signing`); never loads it."""
        return self.signatures.status(self._entry(version))

    def sign(
        self, version: str, signing_key: str | os.PathLike[str], actor: str | None = None
    ) -> dict[str, Any]:
        """Sign a committed version (its artefact re-hashed first); recorded in the audit trail."""
        record = self.signatures.sign_version(version, self._entry(version).require_metadata(), signing_key)
        return self._patch(version, {"artifact": {"signature": record}}, actor, "sign", owned=True)

    # publishing -----------------------------------------------------------------------------------

    def save_model(
        self,
        version: str,
        model: Any,
        metadata: Mapping[str, Any] | None = None,
        *,
        actor: str | None = None,
        signing_key: str | os.PathLike[str] | None = None,
    ) -> dict[str, Any]:
        """Publish ``model`` as a new version, atomically; returns the metadata written. With a
        signing key (``signing_key``, else the registry's), ``model.sig`` lands in the same step.

        Never overwrites: :class:`VersionExistsError` if the version exists or another writer wins.
        """
        check_version(version)
        key = self.signatures.signer(signing_key)
        user = md.check_user_metadata({} if metadata is None else metadata, self.allowed_stages)
        md.dumps(user)  # fail on bad metadata before pickling a large model
        actor = audit.check_actor(actor or default_actor())
        self.stage_rules.check(Promotion(self, version, None, user, actor, key))
        self.audit.refuse_deleted(version)
        publication = self.storage.begin_publication(version)
        pending = None
        try:
            with publication.open_artifact() as f:
                writer = HashingWriter(f)
                cloudpickle.dump(model, writer)
            if key is not None:
                files = {publication.artifact_file: writer.sha256.hexdigest()}
                publication.add_signature(sign_files(key, version, files))
            written = {
                "version": version,
                "created_at": _now(),
                "artifact": {
                    "file": publication.artifact_file,
                    "sha256": writer.sha256.hexdigest(),
                    "size": writer.size,
                    "serializer": "cloudpickle",
                    "cloudpickle_version": cloudpickle.__version__,
                    "python_version": platform.python_version(),
                    **({"signature": signature_record(key)} if key is not None else {}),
                },
                **user,
            }
            data = md.dumps(written)
            pending = self.audit.prepare("publish", version, {}, written, actor, None, data)
            publication.commit(data)
        except BaseException:
            publication.abort()
            if pending is not None and not self._landed(version, data):
                pending.discard()
            elif pending is not None:  # committed, then failed (a lost answer): it happened
                pending.finalise()
                self._stale = True
                return md.copy_json(written)
            raise
        self._stale = True
        pending.finalise()
        return md.copy_json(written)

    def _landed(self, version: str, data: bytes) -> bool:
        """Whether ``version``'s metadata.json is now ``data``: a change that raised may have landed."""
        try:
            return self.storage.read_metadata(version)[0] == data
        except OSError:
            return False

    def set_stage(
        self, version: str, stage: str | None, *, actor: str | None = None, expected: Expected | None = None
    ) -> dict[str, Any]:
        """Move a version to ``stage`` (None removes it); atomic and recorded in the audit trail.

        ``expected``: as for :meth:`update_metadata`.
        """
        if stage is not None:
            md.check_stage(stage, self.allowed_stages)
        return self._patch(version, {"stage": stage}, actor, "set_stage", expected)

    def update_metadata(
        self,
        version: str,
        changes: Mapping[str, Any],
        *,
        actor: str | None = None,
        expected: Expected | None = None,
    ) -> dict[str, Any]:
        """Apply a JSON merge patch to the user metadata (``None`` removes a key); returns the result.

        ``expected`` makes the change conditional (optimistic locking): the metadata the caller
        decided on (as :meth:`get_metadata` returned it), or a test of the current metadata. It is
        checked against the very metadata the change replaces, inside the compare-and-swap; if it
        does not hold, :class:`PreconditionFailedError` is raised and nothing changes.
        """
        return self._patch(version, changes, actor, "update_metadata", expected)

    def _patch(
        self,
        version: str,
        changes: Mapping[str, Any],
        actor: str | None,
        action: str,
        expected: Expected | None = None,
        owned: bool = False,
    ) -> dict[str, Any]:
        check_version(version)
        patch = dict(changes) if owned else md.check_user_metadata(changes, self.allowed_stages, patch=True)
        actor = audit.check_actor(actor or default_actor())
        for attempt in range(_CAS_ATTEMPTS):
            try:
                data, stamp = self.storage.read_metadata(version)
            except FileNotFoundError:
                raise VersionNotFoundError(f"version {version} not found") from None
            except (StorageUnavailableError, ConnectionError, TimeoutError):
                raise
            except OSError as exc:  # not a regular file, no permission, an archived object
                raise CorruptVersionError(
                    f"version {version} is corrupt: {entry_from(version, exc).error}"
                ) from None
            current, error = md.parse_metadata(data)
            if current is None:
                raise CorruptVersionError(f"version {version} is corrupt: {error}")
            if expected is not None and not md.holds(expected, current):
                raise PreconditionFailedError(
                    f"version {version} has changed since it was read; nothing changed"
                )
            updated = md.merge_patch(current, patch)
            if md.same_json(updated, current):  # not ==: True == 1 == 1.0 in Python, not in JSON
                return md.copy_json(updated)
            self.stage_rules.check(Promotion(self, version, current, updated, actor))
            new = md.dumps(updated)
            before, after = md.changed_keys(current, updated)
            pending = self.audit.prepare(action, version, before, after, actor, data, new)
            try:
                wrote = self.storage.replace_metadata(version, new, stamp)
            except ConflictError:
                pending.discard()
                time.sleep(random.uniform(0, 0.002 * (attempt + 1)))
                continue
            except BaseException:
                if not self._landed(version, new):
                    pending.discard()
                    raise
                wrote = False  # it landed, but maybe as another writer's identical change
            self._stale = True
            if wrote is False and self.audit.recorded_elsewhere(pending):
                pending.discard()  # another writer made the same change at once: its event records it
            else:
                pending.finalise()
            return md.copy_json(updated)
        raise ConflictError(f"version {version} kept changing; gave up after {_CAS_ATTEMPTS} attempts")

    def approve(self, version: str, stage: str, actor: str | None = None) -> dict[str, Any]:
        """Record ``actor``'s approval of ``version`` for ``stage``: an audited event (:mod:`.approvals`)."""
        return approvals.approve(self, version, stage, actor or default_actor())

    # lifecycle ------------------------------------------------------------------------------------

    def delete_version(
        self, version: str, actor: str | None = None, expected: Expected | None = None
    ) -> None:
        """Delete a version, refused (:class:`VersionInUseError`) while it serves, is a canary or is
        a stage's rollback target; ``expected``: as for :meth:`update_metadata`. See :mod:`.lifecycle`."""
        self.lifecycle_class(self).delete_version(version, actor, expected)

    def gc(
        self,
        keep_last: int | None = None,
        older_than: timedelta | None = None,
        dry_run: bool = False,
        actor: str | None = None,
    ) -> dict[str, Any]:
        """Delete the unprotected versions beyond a retention rule, and what crashed writers left;
        ``{"deleted", "leftovers", "bytes_freed", "dry_run"}``. See :mod:`.lifecycle`."""
        return self.lifecycle_class(self).gc(keep_last, older_than, dry_run, actor)

    # audit ----------------------------------------------------------------------------------------

    def history(
        self, version: str | None = None, limit: int | None = None, before: str | None = None
    ) -> list[dict[str, Any]]:
        """Audit events (of one version, or all), oldest first: the newest ``limit`` of those older
        than the event whose id is ``before`` (all of them by default). Each has a unique ``id``,
        ordered as the changes happened."""
        if version is not None:
            check_version(version)
        limit = audit.check_limit(limit)
        if before is not None:
            audit.check_event_id(before)
        events = self.audit.page(version, limit, before)
        if version is not None and not events and version not in self.snapshot().by_version:
            raise VersionNotFoundError(f"version {version} not found")
        return events

    def timeline(self, stage: str, include_prerelease: bool = False) -> list[dict[str, Any]]:
        """The versions that served ``stage``, oldest first: ``{"version", "from", "until", "actor"}``."""
        return self._past.timeline(stage, include_prerelease)

    def rollback(self, stage: str, actor: str | None = None) -> dict[str, Any]:
        """Give ``stage`` back to the version it served before its current holder (the console's plan)."""
        return self._past.rollback(stage, actor)

    # resources ------------------------------------------------------------------------------------

    def close(self) -> None:
        """Free what the registry holds (the change notification's descriptors); idempotent. A
        registry closed and used again keeps working, validating its cache without notification."""
        self.storage.close()

    def __enter__(self) -> ModelRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
