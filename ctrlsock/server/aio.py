"""The asyncio waiter: the engine driven by a running event loop's readiness callbacks.

It uses the loop's low-level readiness callbacks (``add_reader``/``add_writer``), not streams: streams cost a
transport, a protocol, a reader and a writer per connection and copy every chunk (a streams server measured
under half of Kea's throughput). Coroutine handlers run as tasks on this loop; plain handlers run in worker
threads and post their reply back with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from .commands import Call
from .connection import Connection
from .engine import Engine
from .http_listener import HttpListener

__all__ = ["AsyncioWaiter"]


class AsyncioWaiter:
    """Serves on ``loop``: :meth:`start`, then :meth:`request_stop` and ``await`` :meth:`wait_stopped`."""

    def __init__(self, engine: Engine, loop: asyncio.AbstractEventLoop) -> None:
        self._engine = engine
        self.loop = loop
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._stopped: asyncio.Future[None] = loop.create_future()
        self._accepting = False
        self.on_finished: Callable[[], None] | None = None  # called soon after the stop is complete
        engine.attach(self)

    def start(self) -> None:
        self.resume_accepting()

    # --- entry points from the loop ------------------------------------------------------------------

    def _accept_callback(self) -> None:
        engine = self._engine
        engine.now = time.monotonic()
        engine.on_acceptable()

    def _read_callback(self, conn: Connection) -> None:
        engine = self._engine
        engine.now = time.monotonic()
        engine.on_readable(conn)

    def _write_callback(self, conn: Connection) -> None:
        engine = self._engine
        engine.now = time.monotonic()
        engine.on_writable(conn)

    # --- the Waiter interface ----------------------------------------------------------------------

    def watch_read(self, conn: Connection) -> None:
        if conn.events:
            self.loop.remove_writer(conn.fd)
        self.loop.add_reader(conn.fd, self._read_callback, conn)

    def watch_write(self, conn: Connection) -> None:
        if conn.events:
            self.loop.remove_reader(conn.fd)
        self.loop.add_writer(conn.fd, self._write_callback, conn)

    def unwatch(self, conn: Connection) -> None:
        self.loop.remove_reader(conn.fd)
        self.loop.remove_writer(conn.fd)

    def pause_accepting(self) -> None:
        if self._accepting:
            self._accepting = False
            self.loop.remove_reader(self._engine.listen_fd)
            for fd in self._engine.http_listeners:
                self.loop.remove_reader(fd)

    def resume_accepting(self) -> None:
        if not self._accepting:
            self._accepting = True
            self.loop.add_reader(self._engine.listen_fd, self._accept_callback)
            for fd, listener in self._engine.http_listeners.items():
                self.loop.add_reader(fd, self._accept_http_callback, listener)

    def _accept_http_callback(self, listener: HttpListener) -> None:
        engine = self._engine
        engine.now = time.monotonic()
        engine.on_acceptable_http(listener)

    def deadline_added(self) -> None:
        deadline = self._engine.next_deadline()
        if deadline is None:
            return
        if self._timer is not None:
            if self._timer_at <= deadline:
                return  # an earlier (or equal) wake-up is already scheduled; it reschedules itself
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self.loop.call_later(max(0.0, deadline - time.monotonic()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        engine = self._engine
        engine.now = time.monotonic()
        engine.on_timer()
        if not self._stopped.done():
            self.deadline_added()

    def post(self, callback: Callable[[], None]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: a late result is dropped
            self.loop.call_soon_threadsafe(callback)

    def start_task(self, conn: Connection, call: Call) -> bool:
        engine = self._engine
        task = self.loop.create_task(call.run_async())
        conn.task = task

        def done(task: asyncio.Task[bytes]) -> None:
            engine.now = time.monotonic()
            engine.call_done(conn, call, None if task.cancelled() else task.result())

        task.add_done_callback(done)
        return True

    def finished(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.pause_accepting()
        if not self._stopped.done():
            self._stopped.set_result(None)
            if self.on_finished is not None:
                self.loop.call_soon(self.on_finished)

    # --- stopping ------------------------------------------------------------------------------------

    def request_stop(self, grace: float) -> None:
        """Stop accepting and drain; call on the loop's thread (use ``call_soon_threadsafe`` elsewhere)."""
        engine = self._engine
        engine.now = time.monotonic()
        engine.begin_stop(grace)
        if not self._stopped.done():
            self.deadline_added()

    async def wait_stopped(self) -> None:
        await asyncio.shield(self._stopped)

    @property
    def stopped(self) -> bool:
        return self._stopped.done()

    def close(self) -> None:
        self.pause_accepting()
        self._engine.close_all()
