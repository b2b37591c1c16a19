"""The asyncio engine: the same sessions and logic as the epoll engine, driven by a running event loop.

It uses the loop's low-level readiness callbacks (``add_reader``/``add_writer``), not streams: streams cost a
transport, a protocol, a reader and a writer per connection and copy every chunk (DESIGN.md/issue 3 measured a
naive streams server at under half of Kea). Plain handlers run inline on the loop; coroutine handlers run as
tasks, so a slow one holds up only its own connection.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from .engine import READ, WRITE, Connection, EngineBase

if TYPE_CHECKING:
    from .core import ControlServer
    from .endpoint import Endpoint

__all__ = ["AsyncioEngine"]


class AsyncioEngine(EngineBase):
    """Serves on ``loop``; :meth:`start`, then :meth:`request_stop` and ``await`` :meth:`wait_stopped`."""

    def __init__(self, server: ControlServer, endpoint: Endpoint, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(server, endpoint)
        self._loop = loop
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._stopped: asyncio.Future[None] = loop.create_future()
        self._grace_timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._loop.add_reader(self._listen_fd, self._accept_callback)

    # --- entry points from the loop ------------------------------------------------------------------

    def _accept_callback(self) -> None:
        self._now = time.monotonic()
        self._on_acceptable()

    def _read_callback(self, conn: Connection) -> None:
        self._now = time.monotonic()
        self._on_readable(conn)
        self._maybe_finished()

    def _write_callback(self, conn: Connection) -> None:
        self._now = time.monotonic()
        self._on_writable(conn)
        self._maybe_finished()

    # --- engine primitives ---------------------------------------------------------------------------

    def _watch_read(self, conn: Connection) -> None:
        if conn.events == WRITE:
            self._loop.remove_writer(conn.fd)
        self._loop.add_reader(conn.fd, self._read_callback, conn)
        conn.events = READ

    def _watch_write(self, conn: Connection) -> None:
        if conn.events == READ:
            self._loop.remove_reader(conn.fd)
        self._loop.add_writer(conn.fd, self._write_callback, conn)
        conn.events = WRITE

    def _unwatch(self, conn: Connection) -> None:
        if conn.events == READ:
            self._loop.remove_reader(conn.fd)
        elif conn.events == WRITE:
            self._loop.remove_writer(conn.fd)
        conn.events = 0

    def _pause_accepting(self) -> None:
        self._loop.remove_reader(self._listen_fd)
        if not self._stopping:
            self._schedule_timer()

    def _resume_accepting(self) -> None:
        self._loop.add_reader(self._listen_fd, self._accept_callback)

    def _run_async(self, conn: Connection, coroutine: Coroutine[Any, Any, bytes]) -> None:
        task = self._loop.create_task(coroutine)
        conn.task = task
        task.add_done_callback(lambda done: self._async_done(conn, done))

    def _async_done(self, conn: Connection, task: asyncio.Task[bytes]) -> None:
        conn.task = None
        if task.cancelled() or self._conns.get(conn.fd) is not conn:
            return  # dropped meanwhile (stop, or the grace period ended)
        self._now = time.monotonic()
        # dispatch() turns every handler exception into a reply, so result() does not raise here.
        self._send_reply(conn, task.result())
        self._maybe_finished()

    # --- timers --------------------------------------------------------------------------------------

    def _deadline_added(self) -> None:
        self._schedule_timer()

    def _schedule_timer(self) -> None:
        deadline = self._next_deadline()
        if deadline is None:
            return
        if self._timer is not None:
            if self._timer_at <= deadline:
                return  # an earlier (or equal) wake-up is already scheduled; it reschedules itself
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self._loop.call_later(max(0.0, deadline - time.monotonic()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._now = time.monotonic()
        self._expire()
        self._schedule_timer()
        self._maybe_finished()

    # --- stopping ------------------------------------------------------------------------------------

    def request_stop(self, grace: float | None = None) -> None:
        """Stop accepting and drain; call on the loop's thread (use ``call_soon_threadsafe`` elsewhere)."""
        if grace is not None:
            self._grace = grace
        if self._stop_requested:
            if grace is not None and self._grace_timer is not None:
                self._grace_timer.cancel()
                self._grace_timer = self._loop.call_later(grace, self._grace_ended)
            return
        self._stop_requested = True
        self._begin_stop()
        self._grace_timer = self._loop.call_later(self._grace, self._grace_ended)
        self._maybe_finished()

    def _grace_ended(self) -> None:
        self._grace_timer = None
        self._now = time.monotonic()
        self._drop_all("the server is stopping and the grace period ended")
        self._maybe_finished()

    def _maybe_finished(self) -> None:
        if self._stopping and not self._conns and not self._stopped.done():
            if self._grace_timer is not None:
                self._grace_timer.cancel()
                self._grace_timer = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._stopped.set_result(None)

    async def wait_stopped(self) -> None:
        await asyncio.shield(self._stopped)

    @property
    def stopped(self) -> bool:
        return self._stopped.done()
