"""Change notification for a registry on local disk, so a warm read costs one ``ioctl``.

On Linux the kernel queues an inotify event before the writer's ``rename`` or ``write`` returns, so
"no event queued" proves nothing changed and the cache is never served late. Where inotify is
missing (other systems, or the watch limit is reached) the watcher says "maybe changed" on every
call and the registry falls back to validating its cache with ``stat``. A forked child (gunicorn
``--preload``) gets its own descriptor, since a shared one would split events between processes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
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
_live: weakref.WeakSet[DirectoryWatcher] = weakref.WeakSet()


class DirectoryWatcher:
    """Watches a set of directories; :meth:`changed` tells whether anything happened in them."""

    def __init__(self, enabled: bool = True) -> None:
        self._enabled = enabled and INotify is not None
        self._inotify: INotify | None = None
        self._fd = -1
        self._watched: set[str] = set()
        self._dirty = True
        _live.add(self)

    @property
    def active(self) -> bool:
        """Whether notifications are in use (else every call must be treated as a change)."""
        return self._enabled

    def watch(self, path: str) -> None:
        """Start watching ``path`` (idempotent); a directory that vanished is simply skipped."""
        if not self._enabled or path in self._watched:
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
        except OSError as exc:  # ENOSPC: out of watches; fall back to stat validation
            log.warning("change notification unavailable (%s); validating with stat instead", exc)
            self._disable()
            return
        self._watched.add(path)

    def forget(self) -> None:
        """Drop every watch, e.g. when the watched tree was replaced; the next call rescans."""
        if self._inotify is not None:
            self._ready.close()
            self._inotify.close()
        self._inotify = None
        self._watched.clear()
        self._dirty = True

    def close(self) -> None:
        """Drop every watch and free the descriptors for good (idempotent): from now on every call
        counts as a change, as without notification."""
        self._disable()

    def changed(self) -> bool:
        """True when something may have changed since the last call (drains the queue)."""
        if self._dirty or self._inotify is None:
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
            return not self._dirty and self._inotify is not None and not self._ready.poll(0)
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
