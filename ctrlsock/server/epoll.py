"""The epoll waiter: one thread runs :meth:`EpollWaiter.run` until the engine's stop is complete.

Used by the thread embedding and by ``ctrlsock serve`` (on the main thread: no hand-off on the hot path).
Other threads (workers with a reply, a stop request, a signal handler) wake it through a pipe.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from collections import deque
from collections.abc import Callable

from .commands import Call
from .connection import Connection
from .engine import READ, WRITE, Engine

__all__ = ["EpollWaiter"]


class EpollWaiter:
    """Waits for the engine with epoll; :meth:`request_stop` is safe from any thread and signal handler."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._epoll = select.epoll()
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._posted: deque[Callable[[], None]] = deque()
        self._post_lock = threading.Lock()
        self._closed = False
        self._stop_requests: list[float] = []  # list.append and pop are atomic: no lock in a signal handler
        self._finished = False
        engine.attach(self)

    # --- the Waiter interface ----------------------------------------------------------------------

    def watch_read(self, conn: Connection) -> None:
        if conn.events:
            self._epoll.modify(conn.fd, select.EPOLLIN)
        else:
            self._epoll.register(conn.fd, select.EPOLLIN)

    def watch_write(self, conn: Connection) -> None:
        if conn.events:
            self._epoll.modify(conn.fd, select.EPOLLOUT)
        else:
            self._epoll.register(conn.fd, select.EPOLLOUT)

    def unwatch(self, conn: Connection) -> None:
        self._epoll.unregister(conn.fd)

    def pause_accepting(self) -> None:
        for fd in (self._engine.listen_fd, *self._engine.http_listeners):
            with contextlib.suppress(OSError, ValueError):
                self._epoll.unregister(fd)

    def resume_accepting(self) -> None:
        for fd in (self._engine.listen_fd, *self._engine.http_listeners):
            with contextlib.suppress(FileExistsError):
                self._epoll.register(fd, select.EPOLLIN)

    def deadline_added(self) -> None:
        """Nothing to do: the loop asks the engine for its next deadline before every wait."""

    def post(self, callback: Callable[[], None]) -> None:
        with self._post_lock:
            if self._closed:
                return  # the engine is gone: a late result (of a hung handler, say) is dropped
            self._posted.append(callback)
            with contextlib.suppress(OSError):  # a full pipe already carries a wake-up
                os.write(self._wake_write, b"\0")

    def start_task(self, conn: Connection, call: Call) -> bool:
        return False  # no event loop here: coroutine handlers run in a worker thread's own loop

    def finished(self) -> None:
        self._finished = True

    # --- control -------------------------------------------------------------------------------------

    def request_stop(self, grace: float) -> None:
        """Ask the loop to stop; safe from any thread and from a signal handler (no lock taken)."""
        self._stop_requests.append(grace)
        with contextlib.suppress(OSError):  # closed: already stopped; full: a wake-up is pending
            os.write(self._wake_write, b"\0")

    def run(self, ready: Callable[[], None] | None = None) -> None:
        """Serve until a stop is requested and its drain is complete; ``ready()`` before the first wait."""
        engine = self._engine
        epoll = self._epoll
        wake_fd = self._wake_read
        epoll.register(wake_fd, select.EPOLLIN)
        epoll.register(engine.listen_fd, select.EPOLLIN)
        http_listeners = engine.http_listeners
        for fd in http_listeners:
            epoll.register(fd, select.EPOLLIN)
        conns = engine.connections_by_fd
        monotonic = time.monotonic
        if ready is not None:
            ready()
        try:
            while not self._finished:
                stops = self._stop_requests
                if stops:
                    engine.now = monotonic()
                    while stops:
                        engine.begin_stop(stops.pop())
                    continue
                deadline = engine.next_deadline()
                timeout = -1.0 if deadline is None else max(0.0, deadline - monotonic())
                events = epoll.poll(timeout)
                engine.now = monotonic()
                for fd, _mask in events:
                    if fd == engine.listen_fd:  # not cached: a deleted socket is bound anew
                        engine.on_acceptable()
                        continue
                    conn = conns.get(fd)
                    if conn is not None:
                        if conn.events == WRITE:
                            engine.on_writable(conn)
                        elif conn.events == READ:
                            engine.on_readable(conn)
                    elif fd == wake_fd:
                        with contextlib.suppress(OSError):
                            os.read(wake_fd, 4096)
                        self._run_posted()
                    else:
                        listener = http_listeners.get(fd)
                        if listener is not None:
                            engine.on_acceptable_http(listener)
                if deadline is not None and engine.now >= deadline:
                    engine.on_timer()
        finally:
            self._close()

    def _run_posted(self) -> None:
        posted = self._posted
        while posted:
            posted.popleft()()

    def _close(self) -> None:
        with self._post_lock:
            self._closed = True
            self._posted.clear()
        self._engine.close_all()
        self._epoll.close()
        os.close(self._wake_read)
        os.close(self._wake_write)
