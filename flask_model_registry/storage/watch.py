"""Change notification for a registry on local disk, so a warm read costs one ``ioctl``.

On Linux the kernel queues an inotify event before the writer's ``rename`` or ``write`` returns, so
"no event queued" proves nothing changed and the cache is never served late. Where inotify is
missing (other systems) the watcher says "maybe changed" on every call and the registry falls back
to validating its cache with ``stat``. Watches are a per-user resource shared by every process on a
host, so a watcher holds at most :func:`watch_budget` optional ones; a folder it cannot watch (the
budget spent, the host's limit reached, no permission) is *unwatched*: the watcher then says "maybe
changed" once per :data:`UNWATCHED_POLL_SECONDS` (or ten rescans' time), and logs that once. A
forked child (gunicorn ``--preload``) gets its own descriptor: a shared one would split events.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import time
import weakref

try:
    from inotify_simple import INotify, parse_events
    from inotify_simple import flags as _flags
except (ImportError, OSError):  # pragma: no cover - not Linux
    INotify = None  # type: ignore[assignment,misc]

log = logging.getLogger(__name__)

_DIR_MASK = 0
if INotify is not None:
    _DIR_MASK = (
        _flags.CREATE
        | _flags.DELETE
        | _flags.MODIFY
        | _flags.ATTRIB
        | _flags.CLOSE_WRITE
        | _flags.MOVED_FROM
        | _flags.MOVED_TO
        | _flags.DELETE_SELF
        | _flags.MOVE_SELF
    )

_READ_SIZE = 1 << 16
#: How often folders that could not be watched are checked with ``stat`` (seconds).
UNWATCHED_POLL_SECONDS = 1.0
#: The most optional watches (version folders) one watcher holds, unless the host allows few.
MAX_WATCHES = 8192
_live: weakref.WeakSet[DirectoryWatcher] = weakref.WeakSet()


def watch_budget() -> int:
    """:data:`MAX_WATCHES`, or a sixteenth of the host's per-user limit if that is smaller: room
    for many processes (gunicorn workers, several services) on one host."""
    try:
        with open("/proc/sys/fs/inotify/max_user_watches") as f:
            return max(16, min(MAX_WATCHES, int(f.read()) // 16))
    except (OSError, ValueError):
        return MAX_WATCHES


class DirectoryWatcher:
    """Watches a set of directories; :meth:`changed` tells whether anything happened in them."""

    def __init__(self, enabled: bool = True, budget: int | None = None) -> None:
        self._enabled = enabled and INotify is not None
        self._inotify: INotify | None = None
        self._fd = -1
        self._watched: set[str] = set()
        self._optional = 0
        self._budget = watch_budget() if budget is None else budget
        self._unwatched: set[str] = set()
        self._warned = False
        self._next_poll = 0.0
        self._dirty = True
        _live.add(self)

    @property
    def active(self) -> bool:
        """Whether notifications are in use (else every call must be treated as a change)."""
        return self._enabled

    @property
    def budget(self) -> int:
        """The most optional watches this watcher holds."""
        return self._budget

    @property
    def watches(self) -> int:
        """How many directories are watched now."""
        return len(self._watched)

    @property
    def unwatched(self) -> int:
        """How many directories asked for could not be watched (checked by polling instead)."""
        return len(self._unwatched)

    def watch(self, path: str, optional: bool = False) -> None:
        """Start watching ``path`` (idempotent); a directory that vanished is simply skipped. An
        ``optional`` one (a version folder) beyond the budget is left to polling instead."""
        if not self._enabled or path in self._watched:
            return
        if optional and self._optional >= self._budget:
            self._give_up(path, f"the budget of {self._budget} watches per registry is spent")
            return
        try:
            if self._inotify is None:
                inotify, ready = INotify(nonblocking=True), select.epoll()
                ready.register(inotify.fileno(), select.EPOLLIN)
                self._fd, self._ready = inotify.fileno(), ready
                self._inotify = inotify  # last: quiet() reads it first
            self._inotify.add_watch(path, _DIR_MASK)
        except (FileNotFoundError, NotADirectoryError):
            # Nothing will tell us when it appears (a root or versions/ not created yet, a
            # version folder removed mid-scan): say "maybe changed" until it can be watched.
            self._dirty = True
            return
        except OSError as exc:  # ENOSPC: the host's watches are spent; EACCES: this folder only
            self._give_up(path, exc.strerror or str(exc))
            return
        self._unwatched.discard(path)
        self._watched.add(path)
        self._optional += optional

    def _give_up(self, path: str, why: str) -> None:
        """Leave ``path`` to polling; say so once per watcher."""
        if path in self._unwatched:
            return
        self._unwatched.add(path)
        if not self._warned:
            self._warned = True
            log.warning(
                "change notification incomplete (%s): folders not watched are checked every %g s",
                why,
                UNWATCHED_POLL_SECONDS,
            )

    def scanned(self, seconds: float) -> None:
        """A rescan that took ``seconds`` has just ended: unwatched folders are next checked after
        :data:`UNWATCHED_POLL_SECONDS`, or ten times as long as that scan took (at most a tenth of
        the time spent polling)."""
        self._next_poll = time.monotonic() + max(UNWATCHED_POLL_SECONDS, 10 * seconds)

    def _poll_due(self) -> bool:
        return bool(self._unwatched) and time.monotonic() >= self._next_poll

    def forget(self) -> None:
        """Drop every watch, e.g. when the watched tree was replaced; the next call rescans."""
        if self._inotify is not None:
            self._ready.close()
            self._inotify.close()
        self._inotify = None
        self._watched.clear()
        self._unwatched.clear()
        self._optional = 0
        self._dirty = True

    def __del__(self) -> None:  # a dropped registry frees its descriptor, without a ResourceWarning
        with contextlib.suppress(Exception):
            self.forget()

    def close(self) -> None:
        """Drop every watch and free the descriptors for good (idempotent): from now on every call
        counts as a change, as without notification."""
        self._disable()

    def changed(self) -> bool:
        """True when something may have changed since the last call (drains the queue)."""
        if self._dirty or self._inotify is None or self._poll_due():
            self._dirty = False
            return True
        if not self._ready.poll(0):  # the hot path of every read: one epoll_wait, no exception
            return False
        with contextlib.suppress(BlockingIOError):
            self._drain(os.read(self._fd, _READ_SIZE))
        return True

    def quiet(self) -> bool:
        """True when nothing has happened since the last :meth:`changed` or :meth:`settle`. Reads
        only, so it is safe beside another thread's scan (which may close the queue: not quiet)."""
        try:
            return (
                not self._dirty
                and self._inotify is not None
                and not self._ready.poll(0)
                and not self._poll_due()
            )
        except (ValueError, OSError):  # closed by forget() in another thread
            return False

    def settle(self) -> None:
        """Called as a rescan starts: what is queued now is seen by that rescan."""
        self._dirty = False
        if self._inotify is not None:
            with contextlib.suppress(BlockingIOError):
                self._drain(os.read(self._fd, _READ_SIZE))

    def _drain(self, data: bytes) -> None:
        while len(data) == _READ_SIZE:  # more may be queued
            try:
                more = os.read(self._fd, _READ_SIZE)
            except BlockingIOError:
                break
            data += more
            if len(more) < _READ_SIZE:
                break
        gone = _flags.DELETE_SELF | _flags.MOVE_SELF | _flags.IGNORED
        if any(event.mask & gone for event in parse_events(data)):
            self.forget()  # a watched folder went away: watch afresh at the rescan

    def _disable(self) -> None:
        self.forget()
        self._enabled = False


def _reset_after_fork() -> None:
    for watcher in list(_live):
        watcher.forget()  # closes the child's copy only; the parent keeps its own queue


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
