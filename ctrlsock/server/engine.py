"""The connection engines' shared logic, and the fast one: an epoll loop for threads and ``ctrlsock serve``.

Hot path of a connection-per-command client (the benchmarked case), in syscalls: ``accept4``, ``recv`` (the
request is usually there already; only on ``EAGAIN`` do we register with epoll and arm the idle timer),
``send`` (a small reply goes out whole, so the connection is never registered for writing), ``close``.
Trio's rule (STYLE.md): try the syscall first, wait for readiness only after ``BlockingIOError``.

Accepted sockets stay blocking at the kernel level and every ``recv``/``send`` passes ``MSG_DONTWAIT``,
which saves an ``fcntl`` per connection; ``send`` adds ``MSG_NOSIGNAL`` because a daemon may run with
``SIGPIPE`` at its default action (DESIGN.md section 5). A reply that does not fit the socket buffer is kept
once (a ``memoryview`` offset in the :class:`Session`) and continued on writability, under a write-progress
deadline separate from the read-idle timeout.

Timers: every connection waiting to read has the same timeout, so the most recently armed deadline is always
the latest: an ``OrderedDict`` kept in arming order (re-arming moves to the end) is a priority queue with
O(1) operations, and the next expiry is its first entry. The same holds for write deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import resource
import select
import socket
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Final

from ctrlsock.protocol import Request

from .commands import read_peer_credentials
from .session import Session, quick_request

if TYPE_CHECKING:
    from .core import ControlServer
    from .endpoint import Endpoint

__all__ = ["SelectorEngine", "ServerStats", "raise_nofile_limit"]

logger = logging.getLogger("ctrlsock.server")

_RECV_FLAGS: Final = socket.MSG_DONTWAIT
_SEND_FLAGS: Final = socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL
_FIRST_RECV: Final = 65536
"""A version-get request is ~30 bytes; 64 KiB stays below glibc's mmap threshold (one cheap malloc)."""
_BULK_RECV: Final = 1 << 20
"""Once a request is known to be large (a config-set), read it in big chunks."""
_MAX_ACCEPTS: Final = 512
"""Accepts per wake-up, so a connection flood cannot starve replies already in flight."""
_ACCEPT_PAUSE: Final = 0.1
"""Seconds to stop accepting after EMFILE/ENFILE (the pending clients wait in the backlog meanwhile)."""
_ACCEPT_RETRY_ERRNOS: Final = frozenset({errno.ECONNABORTED, errno.EINTR, errno.EPROTO})
_ACCEPT_PAUSE_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

_TRIM_AFTER: Final = 4 << 20
"""Replies at least this big hand their freed encoding buffers back to the OS (see ``_trim_memory``)."""

READ: Final = 1
WRITE: Final = 2


class ServerStats:
    """Counters for ``status-get``. Written only by the engine's thread; read from anywhere."""

    __slots__ = ("accepted", "dropped", "open", "served")

    def __init__(self) -> None:
        self.accepted = 0
        self.served = 0
        self.dropped = 0
        self.open = 0

    def as_dict(self) -> dict[str, int]:
        return {"accepted": self.accepted, "served": self.served, "dropped": self.dropped, "open": self.open}


def raise_nofile_limit() -> int:
    """Raise ``RLIMIT_NOFILE``'s soft limit to the hard limit; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target
        except (ValueError, OSError) as error:
            logger.debug("could not raise RLIMIT_NOFILE to %d: %s", target, error)
    return soft


_malloc_trim: list[Callable[[], object]] = []  # glibc's malloc_trim(0), once looked up
_malloc_trim_looked_up = False


def _trim_memory() -> None:
    """Give freed heap memory back to the OS (glibc ``malloc_trim``), after big replies.

    Encoding a reply makes transient copies (the JSON text, then its bytes) that glibc keeps in the heap
    after they are freed once its dynamic mmap threshold has grown past their size; with several big
    replies in flight the process would then hold the in-flight bytes plus that garbage (measured: 8
    stuck 16 MiB replies cost 176 MiB without trimming, 143 MiB with, of which 16 MiB is the payload).
    A no-op where glibc is not the allocator.
    """
    global _malloc_trim_looked_up  # noqa: PLW0603  (looked up once, lazily: ctypes is not free to import)
    if not _malloc_trim_looked_up:
        _malloc_trim_looked_up = True
        try:
            import ctypes  # noqa: PLC0415

            function = ctypes.CDLL(None).malloc_trim
            function.argtypes = [ctypes.c_size_t]
            function.restype = ctypes.c_int
            _malloc_trim.append(lambda: function(0))
        except (OSError, AttributeError):
            pass
    for trim in _malloc_trim:
        trim()


class Connection(Session):
    """A session plus its socket and what the engine watches it for."""

    __slots__ = ("events", "fd", "sock", "task")

    def __init__(self, max_size: int | None, max_depth: int | None, sock: socket.socket) -> None:
        super().__init__(max_size, max_depth)
        self.sock = sock
        self.fd = sock.fileno()
        self.events = 0
        self.task: asyncio.Task[bytes] | None = None


class EngineBase:
    """Everything an engine does except how it waits: accept, read, dispatch, write, time out, stop.

    Subclasses provide ``_watch_read``, ``_watch_write``, ``_unwatch``, ``_run_async`` and
    ``_deadline_added``, and call the ``_on_*`` entry points with ``self._now`` updated.
    """

    def __init__(self, server: ControlServer, endpoint: Endpoint) -> None:
        config = server.config
        self._server = server
        self._endpoint = endpoint
        self._listener = endpoint.sock
        self._listen_fd = endpoint.sock.fileno()
        self._dispatch = server.registry.dispatch
        self._stats = server.stats
        self._idle_timeout = config.idle_timeout
        self._write_deadline = config.write_deadline
        self._max_size = config.max_request_size
        self._max_depth = config.max_depth
        self._conns: dict[int, Connection] = {}
        self._reading: OrderedDict[Connection, float] = OrderedDict()
        self._writing: OrderedDict[Connection, float] = OrderedDict()
        self._now = time.monotonic()
        self._accepting = True
        self._accept_paused_until = 0.0
        self._stop_requested = False
        self._stopping = False
        self._grace = config.stop_grace
        self._accept_starved = False

    # --- to be provided by the engine --------------------------------------------------------------

    def _watch_read(self, conn: Connection) -> None:
        raise NotImplementedError

    def _watch_write(self, conn: Connection) -> None:
        raise NotImplementedError

    def _unwatch(self, conn: Connection) -> None:
        raise NotImplementedError

    def _run_async(self, conn: Connection, coroutine: Coroutine[Any, Any, bytes]) -> None:
        raise NotImplementedError

    def _deadline_added(self) -> None:
        """A deadline was armed while none was pending (asyncio must schedule a timer; epoll need not)."""

    def _pause_accepting(self) -> None:
        raise NotImplementedError

    def _resume_accepting(self) -> None:
        raise NotImplementedError

    # --- accepting ----------------------------------------------------------------------------------

    def _on_acceptable(self) -> None:
        # The hot path of connection-per-command clients: accept, recv, dispatch, send, close, with no
        # Connection object, no epoll registration and no timer when the request is already there and the
        # reply fits the socket buffer (measured: the usual case, even with 8 clients on 2 cores).
        # listener._accept() is accept4(SOCK_CLOEXEC) without socket.accept()'s wrapper, whose
        # family/type enum conversions cost as much as the syscall.
        accept = self._listener._accept  # type: ignore[attr-defined]  # the C method socket.accept() wraps
        stats = self._stats
        dispatch = self._dispatch
        max_depth = self._max_depth
        new_socket = socket.socket
        for _ in range(_MAX_ACCEPTS):
            if not self._accepting:
                return
            try:
                fd, _address = accept()
            except BlockingIOError:
                return
            except OSError as error:
                if self._accept_failed(error):
                    continue
                return
            sock = new_socket(socket.AF_UNIX, socket.SOCK_STREAM, 0, fd)
            stats.accepted += 1
            self._accept_starved = False
            try:
                data = sock.recv(_FIRST_RECV, _RECV_FLAGS)
            except BlockingIOError:
                conn = self._adopt(sock)  # the request is not there yet: wait for it
                self._watch_read(conn)
                self._arm_read(conn)
                continue
            except OSError:
                sock.close()
                continue
            request = quick_request(data, max_depth) if data else None
            if request is None:
                # Split, odd or empty: the framer decides, and reads on if the request is incomplete.
                conn = self._adopt(sock)
                if self._receive(conn, data, quick=False):
                    self._on_readable(conn)
                continue
            stats.open += 1  # counted while its command runs (status-get reports itself)
            reply = dispatch(request, sock)
            stats.open -= 1
            if type(reply) is not bytes:
                self._run_async(self._adopt(sock), reply)  # type: ignore[arg-type]  # a coroutine
                continue
            if len(reply) >= _TRIM_AFTER:
                self._send_reply(self._adopt(sock), reply)
                continue
            try:
                sent = sock.send(reply, _SEND_FLAGS)
            except OSError:
                sent = -1  # EAGAIN, or the client left: the general path sorts it out
            if sent == len(reply):
                stats.served += 1
                sock.close()
            elif sent > 0:
                self._wait_writable(self._adopt(sock), reply, sent)
            else:
                self._send_reply(self._adopt(sock), reply)

    def _accept_failed(self, error: OSError) -> bool:
        """Handle an accept() error; True to keep accepting."""
        if error.errno in _ACCEPT_RETRY_ERRNOS:
            return True
        if error.errno in _ACCEPT_PAUSE_ERRNOS:
            # Once per episode: the retries every _ACCEPT_PAUSE would flood the log.
            logger.log(
                logging.DEBUG if self._accept_starved else logging.WARNING,
                "cannot accept on %s: %s (%d connections open); pausing accepts",
                self._endpoint.socket_path,
                error.strerror,
                len(self._conns),
            )
            self._accept_starved = True
            self._accepting = False
            self._accept_paused_until = self._now + _ACCEPT_PAUSE
            self._pause_accepting()
            return False
        if self._stopping:
            return False
        raise error

    def _adopt(self, sock: socket.socket) -> Connection:
        conn = Connection(self._max_size, self._max_depth, sock)
        self._conns[conn.fd] = conn
        self._stats.open += 1
        return conn

    # --- reading ------------------------------------------------------------------------------------

    def _on_readable(self, conn: Connection) -> None:
        recv = conn.sock.recv
        while True:
            try:
                data = recv(_FIRST_RECV if conn.received < _FIRST_RECV else _BULK_RECV, _RECV_FLAGS)
            except BlockingIOError:
                if not conn.events & READ:
                    self._watch_read(conn)
                self._arm_read(conn)
                return
            except OSError:
                self._close(conn)
                return
            if not self._receive(conn, data):
                return

    def _receive(self, conn: Connection, data: bytes, *, quick: bool = True) -> bool:
        """Feed one chunk; True when more data is needed (the caller reads again)."""
        result = conn.receive_data(data, quick=quick)
        if result is None:
            if not data:
                self._close(conn)  # the peer closed before sending anything
                return False
            return True
        if type(result) is bytes:
            self._send_reply(conn, result)
        else:
            self._handle(conn, result)  # type: ignore[arg-type]  # Request is the only other case
        return False

    def _arm_read(self, conn: Connection) -> None:
        reading = self._reading
        was_empty = not reading
        # The clock is read here, not once per wake-up: handlers run in between and may be slow.
        reading[conn] = time.monotonic() + self._idle_timeout
        reading.move_to_end(conn)
        if was_empty:
            self._deadline_added()

    def _handle(self, conn: Connection, request: Request) -> None:
        self._reading.pop(conn, None)
        if conn.events:
            # Kea pauses the inactivity timer while a command runs; and a client that closes or sends
            # garbage now must not wake us: stop watching until the reply is ready.
            self._unwatch(conn)
        result = self._dispatch(request, conn.sock)
        if type(result) is bytes:
            self._send_reply(conn, result)
        else:
            self._run_async(conn, result)  # type: ignore[arg-type]  # the only other case: a coroutine

    # --- writing ------------------------------------------------------------------------------------

    def _send_reply(self, conn: Connection, reply: bytes) -> None:
        self._reading.pop(conn, None)
        if len(reply) >= _TRIM_AFTER:
            _trim_memory()  # the encoder's transient copies were just freed
        try:
            sent = conn.sock.send(reply, _SEND_FLAGS)
        except BlockingIOError:
            sent = 0
        except OSError as error:
            conn.start_reply(reply)
            self._drop(conn, f"client went away ({error.strerror})")
            return
        if sent == len(reply):
            self._stats.served += 1
            self._close(conn)
            return
        self._wait_writable(conn, reply, sent)

    def _wait_writable(self, conn: Connection, reply: bytes, sent: int) -> None:
        """The socket took ``sent`` bytes of ``reply``: keep the rest and continue on writability."""
        conn.start_reply(reply)
        conn.advance(sent)
        self._watch_write(conn)
        self._arm_write(conn)

    def _on_writable(self, conn: Connection) -> None:
        try:
            sent = conn.sock.send(conn.pending, _SEND_FLAGS)
        except BlockingIOError:
            return
        except OSError as error:
            self._drop(conn, f"client went away ({error.strerror})")
            return
        if conn.advance(sent):
            self._stats.served += 1
            self._close(conn)
            return
        self._arm_write(conn)

    def _arm_write(self, conn: Connection) -> None:
        writing = self._writing
        was_empty = not writing
        writing[conn] = time.monotonic() + self._write_deadline
        writing.move_to_end(conn)
        if was_empty:
            self._deadline_added()

    # --- ending -------------------------------------------------------------------------------------

    def _close(self, conn: Connection) -> None:
        if conn.events:
            self._unwatch(conn)
        self._reading.pop(conn, None)
        self._writing.pop(conn, None)
        del self._conns[conn.fd]
        self._stats.open -= 1
        big = conn.reply_size >= _TRIM_AFTER
        conn.release_reply()
        conn.sock.close()
        if big:
            _trim_memory()
        if not self._accepting and not self._stopping:
            self._accepting = True
            self._resume_accepting()

    def _drop(self, conn: Connection, why: str) -> None:
        """Give up on a reply: log who lost how much, count it, close."""
        self._stats.dropped += 1
        try:
            peer = read_peer_credentials(conn.sock)
            who = f"pid {peer.pid} (uid {peer.uid})"
        except OSError:
            who = "a client"
        logger.warning("dropped reply to %s after %d of %d bytes: %s", who, conn.sent, conn.reply_size, why)
        if conn.task is not None:
            conn.task.cancel()
        self._close(conn)

    def _expire(self) -> None:
        now = self._now
        reading = self._reading
        while reading:
            conn, deadline = next(iter(reading.items()))
            if deadline > now:
                break
            del reading[conn]
            # Kea's reply on its inactivity timer, naming any partial command it throws away.
            logger.info("connection idle for %.3g s; answering with a timeout", self._idle_timeout)
            if conn.events:
                self._unwatch(conn)
            self._send_reply(conn, conn.timeout_reply())
        writing = self._writing
        while writing:
            conn, deadline = next(iter(writing.items()))
            if deadline > now:
                break
            self._drop(
                conn, f"no write progress for {self._write_deadline:.3g} s (the client is not reading)"
            )
        if not self._accepting and not self._stopping and now >= self._accept_paused_until:
            self._accepting = True
            self._resume_accepting()

    def _next_deadline(self) -> float | None:
        deadline: float | None = None
        if self._reading:
            deadline = next(iter(self._reading.values()))
        if self._writing:
            first = next(iter(self._writing.values()))
            deadline = first if deadline is None else min(deadline, first)
        if not self._accepting and not self._stopping:
            deadline = (
                self._accept_paused_until if deadline is None else min(deadline, self._accept_paused_until)
            )
        return deadline

    def _begin_stop(self) -> None:
        """Stop accepting, and close the connections that have sent nothing: nothing is in flight there."""
        self._stopping = True
        if self._accepting:
            self._accepting = False
            self._pause_accepting()
        self._endpoint.close_listener()
        for conn in list(self._reading):
            if conn.received == 0:
                self._close(conn)

    def _drop_all(self, why: str) -> None:
        for conn in list(self._conns.values()):
            if conn.reply_size:
                self._drop(conn, why)
            else:
                if conn.task is not None:
                    conn.task.cancel()
                self._close(conn)


class SelectorEngine(EngineBase):
    """An epoll loop run by one thread: :meth:`run` blocks until :meth:`request_stop` and the drain end."""

    def __init__(self, server: ControlServer, endpoint: Endpoint) -> None:
        super().__init__(server, endpoint)
        self._epoll = select.epoll()
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._async_loop: asyncio.AbstractEventLoop | None = None

    def request_stop(self, grace: float | None = None) -> None:
        """Ask the loop to stop; safe from any thread and from a signal handler."""
        if grace is not None:
            self._grace = grace
        self._stop_requested = True
        with contextlib.suppress(OSError):  # a full pipe already carries a wake-up
            os.write(self._wake_write, b"\0")

    def _watch_read(self, conn: Connection) -> None:
        if conn.events:
            self._epoll.modify(conn.fd, select.EPOLLIN)
        else:
            self._epoll.register(conn.fd, select.EPOLLIN)
        conn.events = READ

    def _watch_write(self, conn: Connection) -> None:
        if conn.events:
            self._epoll.modify(conn.fd, select.EPOLLOUT)
        else:
            self._epoll.register(conn.fd, select.EPOLLOUT)
        conn.events = WRITE

    def _unwatch(self, conn: Connection) -> None:
        self._epoll.unregister(conn.fd)
        conn.events = 0

    def _pause_accepting(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._epoll.unregister(self._listen_fd)

    def _resume_accepting(self) -> None:
        self._epoll.register(self._listen_fd, select.EPOLLIN)

    def _run_async(self, conn: Connection, coroutine: Coroutine[Any, Any, bytes]) -> None:
        # A coroutine handler in a threaded daemon: run it to completion on this thread's private loop.
        # Like a slow plain handler, it holds up this engine (not the daemon's own threads).
        if self._async_loop is None:
            self._async_loop = asyncio.new_event_loop()
        reply = self._async_loop.run_until_complete(coroutine)
        self._now = time.monotonic()
        self._send_reply(conn, reply)

    def run(self, ready: Callable[[], None] | None = None) -> None:
        """Serve until :meth:`request_stop`, then drain in-flight replies for the grace period.

        ``ready`` (a callable) is called once the loop is about to wait for the first time.
        """
        epoll = self._epoll
        conns = self._conns
        listen_fd = self._listen_fd
        wake_fd = self._wake_read
        epoll.register(wake_fd, select.EPOLLIN)
        epoll.register(listen_fd, select.EPOLLIN)
        if ready is not None:
            ready()
        try:
            self._loop(epoll, conns, listen_fd, wake_fd)
            self._begin_stop()
            grace_end = time.monotonic() + self._grace
            while conns:
                self._now = now = time.monotonic()
                if now >= grace_end:
                    self._drop_all("the server is stopping and the grace period ended")
                    break
                self._expire()
                deadline = self._next_deadline()
                wait_until = grace_end if deadline is None else min(deadline, grace_end)
                self._poll_once(epoll, conns, -1, wake_fd, max(0.0, wait_until - now))
        finally:
            self._close_everything()

    def _loop(self, epoll: select.epoll, conns: dict[int, Connection], listen_fd: int, wake_fd: int) -> None:
        monotonic = time.monotonic
        while not self._stop_requested:
            deadline = self._next_deadline()
            timeout = -1.0 if deadline is None else max(0.0, deadline - monotonic())
            self._poll_once(epoll, conns, listen_fd, wake_fd, timeout)
            if self._reading or self._writing or not self._accepting:
                self._expire()

    def _poll_once(
        self, epoll: select.epoll, conns: dict[int, Connection], listen_fd: int, wake_fd: int, timeout: float
    ) -> None:
        events = epoll.poll(timeout)
        self._now = time.monotonic()
        for fd, _mask in events:
            if fd == listen_fd:
                self._on_acceptable()
                continue
            conn = conns.get(fd)
            if conn is not None:
                if conn.events == WRITE:
                    self._on_writable(conn)
                elif conn.events == READ:
                    self._on_readable(conn)
            elif fd == wake_fd:
                with contextlib.suppress(OSError):
                    os.read(wake_fd, 4096)

    def _close_everything(self) -> None:
        for conn in list(self._conns.values()):
            self._close(conn)
        self._endpoint.close_listener()
        self._epoll.close()
        os.close(self._wake_read)
        os.close(self._wake_write)
        if self._async_loop is not None:
            self._async_loop.close()
            self._async_loop = None
