"""Keeping the socket and lock file alive under /tmp cleaners (systemd-tmpfiles, tmpwatch, a cron find).

Prevent first: age-based cleaners skip files whose times are recent, so both files are touched with
``utime()`` about hourly (PostgreSQL's ``TouchSocketFiles()`` and ``TouchSocketLockFiles()`` do exactly
this). Then detect and heal: the paths are rechecked every minute or so (PostgreSQL's postmaster rechecks
its pid file every minute). A deleted socket is bound again (temporary name, then ``link()``). A deleted
lock file is put back, already locked, by ``SocketLock.restore()``, which never replaces a file another
daemon put there meanwhile; if that happened, we log an error and stop serving the path, touching none of
the other daemon's files.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Callable

from ctrlsock.errors import CtrlSockError
from ctrlsock.lock import LockIntegrity

from .config import ServerConfig
from .endpoint import Endpoint
from .engine import Engine

__all__ = ["Upkeep"]

logger = logging.getLogger("ctrlsock.server")


class Upkeep:
    """The periodic touch and recheck of one endpoint, run by its engine's timer (on the I/O thread)."""

    def __init__(self, config: ServerConfig, endpoint: Endpoint, engine: Engine, stop: Callable[[], None]):
        self._endpoint = endpoint
        self._engine = engine
        self._stop = stop
        self._touch_interval = config.touch_interval
        self._recheck_interval = config.recheck_interval
        now = time.monotonic()
        self._next_touch = None if self._touch_interval is None else now + self._touch_interval
        self._next_recheck = None if self._recheck_interval is None else now + self._recheck_interval

    def install(self) -> None:
        first = self._next()
        if first is not None:
            self._engine.set_maintenance(self.run, first)

    def _next(self) -> float | None:
        times = [t for t in (self._next_touch, self._next_recheck) if t is not None]
        return min(times) if times else None

    def run(self, now: float) -> float | None:
        if self._next_recheck is not None and now >= self._next_recheck:
            assert self._recheck_interval is not None
            self._next_recheck = now + self._recheck_interval
            if not self.recheck():
                return None
        if self._next_touch is not None and now >= self._next_touch:
            assert self._touch_interval is not None
            self._next_touch = now + self._touch_interval
            self.touch()
        return self._next()

    def touch(self) -> None:
        endpoint = self._endpoint
        paths = [endpoint.lock.lock_path]
        if not endpoint.activated:
            paths.append(endpoint.socket_path)
        for path in paths:
            try:
                os.utime(path, follow_symlinks=False)
            except OSError as error:
                logger.debug("cannot touch %s: %s", path, error.strerror)
        logger.debug("touched %s so that /tmp cleaners pass them by", " and ".join(map(str, paths)))

    def recheck(self) -> bool:
        """Heal what was deleted; False when we stopped serving the path."""
        endpoint = self._endpoint
        lock = endpoint.lock
        try:
            integrity = lock.check_intact()
        except OSError as error:
            logger.debug("cannot check %s: %s", lock.lock_path, error.strerror)
            integrity = LockIntegrity.INTACT
        if integrity is not LockIntegrity.INTACT:
            try:
                restored = integrity is LockIntegrity.DELETED and lock.restore()
            except CtrlSockError as error:
                logger.error("%s", error)
                restored = False
            if not restored:
                logger.error(
                    "the lock file %s was deleted and another file is there now; stopping serving %s "
                    "and leaving that file alone",
                    lock.lock_path,
                    endpoint.socket_path,
                )
                self._stop()
                return False
            logger.warning("the lock file %s was deleted; put a new, locked one in its place", lock.lock_path)
        if endpoint.activated or endpoint.inode is None:
            return True  # a socket passed by systemd is systemd's to keep
        try:
            st = os.lstat(endpoint.socket_path)
        except FileNotFoundError:
            st = None
        except OSError as error:
            logger.debug("cannot check %s: %s", endpoint.socket_path, error.strerror)
            return True
        if st is not None:
            if not stat.S_ISSOCK(st.st_mode) or (st.st_dev, st.st_ino) != endpoint.inode:
                logger.error("%s was replaced by another file; leaving it in place", endpoint.socket_path)
            return True
        try:
            sock = endpoint.rebind()
        except CtrlSockError as error:
            logger.error(
                "the socket %s was deleted and cannot be bound again: %s", endpoint.socket_path, error
            )
            return True
        self._engine.replace_listener(sock)
        logger.warning("the socket %s was deleted; bound it again", endpoint.socket_path)
        return True
