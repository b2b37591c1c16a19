"""The connection engine: accept, read, dispatch, write, time out and stop, over a waiter that waits.

One :class:`Engine` owns the connections, their deadlines and the accept state. It calls down into a small
:class:`Waiter` (``watch_read``, ``watch_write``, ``unwatch``, pausing accepts, a wake-up for a deadline,
``post`` from other threads, starting a coroutine), implemented twice: an epoll loop for threads and
``ctrlsock serve`` (``epoll.py``), and the running asyncio loop's readiness callbacks (``aio.py``). The
waiter calls back into ``on_acceptable``, ``on_readable``, ``on_writable`` and ``on_timer``.

The execution model: inline commands (the built-ins) run right here on the I/O thread; every other handler
is a :class:`~.commands.Call` that runs in a worker thread (or, for a coroutine handler in the asyncio
embedding, as a task on the loop), at most ``max_concurrent_handlers`` at a time, and posts its reply back.
So I/O, timeouts and the built-ins never wait for a user handler.

Hot path of a connection-per-command client (the benchmarked case), in syscalls: ``accept4``, ``recv`` (the
request is usually there already; only on ``EAGAIN`` do we register with the waiter and arm the idle timer),
``send`` (a small reply goes out whole, so the connection is never registered for writing), ``close``.
Trio's rule: try the syscall first, wait for readiness only after ``BlockingIOError``.

Accepted sockets stay blocking at the kernel level and every ``recv``/``send`` passes ``MSG_DONTWAIT``,
which saves an ``fcntl`` per connection; ``send`` adds ``MSG_NOSIGNAL`` because a daemon may run with
``SIGPIPE`` at its default action, where a client that left would kill it. A reply that does not fit the
socket buffer is kept once (a ``memoryview`` offset in the :class:`Session`) and continued on writability,
under a write-progress deadline separate from the read-idle timeout.

Timers: every connection waiting to read has the same timeout, so the most recently armed deadline is always
the latest: an ``OrderedDict`` kept in arming order (re-arming moves to the end) is a priority queue with
O(1) operations, and the next expiry is its first entry. The same holds for write deadlines and for the
whole-request deadlines. Handler timeouts differ per command; few run at once, so a plain dict is scanned.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import resource
import socket
import ssl
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final, Protocol

from ctrlsock.protocol import Reply, Request, Result, encode_reply

from .commands import Call, CommandRegistry, HttpPeer, read_peer_credentials
from .config import ServerConfig
from .connection import Connection, HttpConnection, TlsStream
from .endpoint import Endpoint
from .http_listener import HttpListener
from .session import NEED_DATA, Event, Rejected, Unparsed, quick_request
from .stats import ServerStats
from .workers import WorkerPool

__all__ = [
    "SHUTTING_DOWN_TEXT",
    "Connection",
    "Engine",
    "Waiter",
    "raise_nofile_limit",
]

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
"""Requests or replies at least this big hand their freed buffers back to the OS (see ``_trim_memory``)."""
_UNCOUNTED_REPLY: Final = 65536
"""Replies smaller than this go out whole in the usual case and are not checked against ``max_buffered``."""

_LINGER: Final = 2.0
"""Seconds an HTTP connection answered with a close reads (and drops) what its client still sends."""
_DRAIN_RECV: Final = 256 * 1024
_HTTP_HEAD_ROOM: Final = 4096
"""Bytes an HTTP response adds to a reply (status line, headers, the list's brackets), at most."""

SHUTTING_DOWN_TEXT: Final = "Server is shutting down"
"""Result 1 with this text: a stop began before the command could run, or its grace period ended."""

READ: Final = 1
WRITE: Final = 2


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
    """Give freed heap memory back to the OS (glibc ``malloc_trim``), after big requests and replies.

    Encoding a reply or decoding a request makes transient copies that glibc keeps in the heap after they
    are freed once its dynamic mmap threshold has grown past their size; without trimming the process
    keeps that garbage (measured: 8 stuck 16 MiB replies cost 176 MiB without trimming, 143 MiB with, of
    which 16 MiB is the payload). A no-op where glibc is not the allocator.
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


def _shutting_down_reply() -> bytes:
    return encode_reply(Reply(Result.ERROR, SHUTTING_DOWN_TEXT))


class Waiter(Protocol):
    """How an engine waits: the part that differs between epoll and asyncio."""

    def watch_read(self, conn: Connection) -> None: ...

    def watch_write(self, conn: Connection) -> None: ...

    def unwatch(self, conn: Connection) -> None: ...

    def pause_accepting(self) -> None:
        """Stop watching every listener (the unix socket and any HTTP ones)."""

    def resume_accepting(self) -> None: ...

    def deadline_added(self) -> None:
        """A deadline was armed: make sure ``on_timer`` runs by ``engine.next_deadline()``."""

    def post(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the I/O thread soon; callable from any thread, never raises."""

    def start_task(self, conn: Connection, call: Call) -> bool:
        """Run a coroutine call as a task of the loop (True), or decline (False: a worker thread runs it)."""

    def finished(self) -> None:
        """The stop is complete: nothing is left to serve."""


# Engines alive in this process, for the at-fork hook (a forked child must not keep our sockets).
_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


def _close_in_forked_child() -> None:
    for engine in list(_engines):
        engine.forget_after_fork()


os.register_at_fork(after_in_child=_close_in_forked_child)


class Engine:
    """Everything the server does with connections, whatever waits for readiness.

    Methods named ``on_*`` and :meth:`begin_stop` run on the I/O thread only.
    """

    def __init__(
        self,
        config: ServerConfig,
        endpoint: Endpoint,
        registry: CommandRegistry,
        stats: ServerStats,
        name: str,
        *,
        http_listeners: Sequence[HttpListener] = (),
    ) -> None:
        self._config = config
        self._endpoint = endpoint
        self._listener = endpoint.sock
        self.listen_fd = endpoint.sock.fileno()  # read by the waiter for every event: a plain attribute
        self._dispatch = registry.dispatch
        self._stats = stats
        self._idle_timeout = config.idle_timeout
        self._write_deadline = config.write_deadline
        self._request_deadline = config.request_deadline
        self._max_size = config.max_request_size
        self._max_depth = config.max_depth
        self._max_buffered = config.max_buffered
        self._max_concurrent = config.max_concurrent_handlers
        self._conns: dict[int, Connection] = {}
        # Read by the waiter: the HTTP listeners by descriptor (empty unless HTTP is served).
        self.http_listeners: dict[int, HttpListener] = {listener.fd: listener for listener in http_listeners}
        self._reading: OrderedDict[Connection, float] = OrderedDict()
        self._writing: OrderedDict[Connection, float] = OrderedDict()
        self._started: OrderedDict[Connection, float] = OrderedDict()  # whole-request deadlines
        self._lingering: OrderedDict[Connection, float] = OrderedDict()  # HTTP closes, draining
        self._call_deadlines: dict[Connection, float] = {}
        self._queued: deque[Connection] = deque()
        self._active = 0  # user calls running (a hung one counts until it returns)
        self._held_requests = 0
        self._held_replies: dict[int, list[int]] = {}  # id(reply) -> [size, connections holding it]
        self._held_reply_bytes = 0
        self._pool = WorkerPool(self._max_concurrent, f"{name} handler")
        self._decoder = WorkerPool(1, f"{name} decoder")  # not a handler: never waits behind one
        self._waiter: Waiter | None = None
        self.now = time.monotonic()
        self._accepting = True
        self._accept_paused_until = 0.0
        self._accept_starved = False
        self._more_waiting = False  # set by _accepted: its last batch was full
        self._stopping = False
        self._grace_end: float | None = None
        self._done = False
        # Set from any thread (a plain attribute write, safe in a signal handler) when a stop is asked for:
        # the accept loop then leaves the rest of the backlog to the stop, which answers it.
        self.stop_pending = False
        self._maintenance: Callable[[float], float | None] | None = None
        self._maintenance_at: float | None = None
        _engines.add(self)

    def attach(self, waiter: Waiter) -> None:
        self._waiter = waiter

    @property
    def waiter(self) -> Waiter:
        waiter = self._waiter
        assert waiter is not None, "attach() a waiter first"
        return waiter

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def done(self) -> bool:
        """The stop is complete: no connection is left (or the grace period ended)."""
        return self._done

    def set_maintenance(self, task: Callable[[float], float | None], first: float) -> None:
        """Run ``task(now)`` at ``first`` and then whenever it says (its return value; None: never)."""
        self._maintenance = task
        self._maintenance_at = first
        if self._waiter is not None:
            self._waiter.deadline_added()  # asyncio schedules its timer only when told

    def replace_listener(self, sock: socket.socket) -> None:
        """Serve on a newly bound listener (the old one's path was deleted): accept what the old one has
        waiting, then close it."""
        old = self._listener
        waiter = self.waiter
        if self._accepting:
            waiter.pause_accepting()
        while self._accept_some(drain=True):
            pass
        self._listener = sock
        self.listen_fd = sock.fileno()
        old.close()
        if self._accepting:
            waiter.resume_accepting()

    # --- accepting ----------------------------------------------------------------------------------

    def on_acceptable(self) -> None:
        self._accept_some(drain=False)

    def _accept_some(self, *, drain: bool) -> bool:
        """Accept and serve up to a batch; True when more may be waiting."""
        # The hot path of connection-per-command clients: accept, recv, dispatch, send, close, with no
        # Connection object, no registration and no timer when the request is already there and the reply
        # fits the socket buffer (measured: the usual case, even with 8 clients on 2 cores).
        stats = self._stats
        dispatch = self._dispatch
        max_depth = self._max_depth
        new_socket = socket.socket
        for fd, _address in self._accepted(self._listener, drain=drain):
            sock = new_socket(socket.AF_UNIX, socket.SOCK_STREAM, 0, fd)
            try:
                data = sock.recv(_FIRST_RECV, _RECV_FLAGS)
            except BlockingIOError:
                conn = self._adopt(sock)
                if self._stopping:
                    # Accepted while stopping, with nothing sent yet: answer rather than cut it off.
                    self._send_reply(conn, _shutting_down_reply())
                    continue
                self._wait_for_request(conn)
                continue
            except OSError:
                sock.close()
                continue
            stats.bytes_received += len(data)
            request = quick_request(data, max_depth) if data else None
            if request is None:
                # Split, odd, large or empty: the session decides, and reads on if it is incomplete.
                conn = self._adopt(sock)
                if self._receive(conn, data, quick=False):
                    self.on_readable(conn)
                continue
            stats.open += 1  # counted while its command runs (status-get reports itself)
            reply = dispatch(request, sock)
            stats.open -= 1
            if type(reply) is not bytes:
                self._start_call(self._adopt(sock), reply)  # type: ignore[arg-type]  # a Call
                continue
            if len(reply) >= _UNCOUNTED_REPLY:
                self._send_reply(self._adopt(sock), reply)
                continue
            try:
                sent = sock.send(reply, _SEND_FLAGS)
            except OSError:
                sent = -1  # EAGAIN, or the client left: the general path sorts it out
            if sent == len(reply):
                stats.served += 1
                stats.bytes_sent += sent
                sock.close()
            else:
                self._send_reply(self._adopt(sock), reply, already=max(sent, 0))
        return self._more_waiting

    def _accepted(self, listener: socket.socket, *, drain: bool) -> Iterator[tuple[int, Any]]:
        """``accept()`` up to a batch on ``listener``, yielding each new descriptor and peer address.

        The stop, accept errors and pauses are handled here; afterwards ``_more_waiting`` says whether
        the batch was full (more clients may be waiting).
        """
        # listener._accept() is accept4(SOCK_CLOEXEC) without socket.accept()'s wrapper, whose
        # family/type enum conversions cost as much as the syscall.
        accept = listener._accept  # type: ignore[attr-defined]  # the C method socket.accept() wraps
        self._more_waiting = False
        for _ in range(_MAX_ACCEPTS):
            if not drain and (not self._accepting or self.stop_pending):
                return
            try:
                fd, address = accept()
            except BlockingIOError:
                return
            except OSError as error:
                if self._accept_failed(error):
                    continue
                return
            self._stats.accepted += 1
            self._accept_starved = False
            yield fd, address
        self._more_waiting = True

    def on_acceptable_http(self, listener: HttpListener) -> None:
        self._accept_http(listener, drain=False)

    def _accept_http(self, listener: HttpListener, *, drain: bool) -> bool:
        """Accept HTTP(S) clients and start reading (or the TLS handshake); True when more may wait."""
        for fd, address in self._accepted(listener.sock, drain=drain):
            sock = socket.socket(listener.family, socket.SOCK_STREAM, 0, fd)
            stream: socket.socket | TlsStream = sock
            try:
                # A reply is one write; Nagle would hold its tail back until the client's delayed ACK.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if listener.tls is not None:
                    sock.setblocking(False)
                    stream = TlsStream(
                        listener.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
                    )
            except OSError:
                sock.close()
                continue
            peer = HttpPeer(address[0], address[1], tls=listener.tls is not None)
            conn = HttpConnection(self._max_size, self._max_depth, stream, listener, peer)
            self._conns[conn.fd] = conn
            self._stats.open += 1
            # From its first instant a connection has request_timeout for its request, TLS handshake
            # included, as in Kea: a client that connects and says nothing is not kept for idle_timeout.
            self._arm_deadline(listener.requests, conn, listener.config.request_timeout)
            if conn.handshaking:
                self._handshake(conn)
            else:
                self._read_ready(conn, idle_ok=False)
        return self._more_waiting

    def _handshake(self, conn: Connection) -> None:
        """One step of a TLS handshake; then read the request as on any connection."""
        assert isinstance(conn.sock, TlsStream)
        try:
            conn.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._watch(conn, READ)
            return
        except ssl.SSLWantWriteError:
            self._watch(conn, WRITE)
            return
        except OSError as error:  # ssl.SSLError included: no certificate, a bad one, not TLS at all
            self._stats.tls_failed += 1
            reason = error.reason if isinstance(error, ssl.SSLError) and error.reason else error.strerror
            assert isinstance(conn, HttpConnection)
            logger.info("tls handshake with %s failed: %s", conn.peer.address, reason or error)
            self._close(conn)
            return
        assert isinstance(conn, HttpConnection)
        conn.handshaking = False
        self._read_ready(conn, idle_ok=False)

    def _watch(self, conn: Connection, events: int) -> None:
        if conn.events == events:
            return
        if events == READ:
            self.waiter.watch_read(conn)
        else:
            self.waiter.watch_write(conn)
        conn.events = events

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
            if self._accepting:
                self._accepting = False
                self._accept_paused_until = self.now + _ACCEPT_PAUSE
                self.waiter.pause_accepting()
                self.waiter.deadline_added()
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

    def on_readable(self, conn: Connection) -> None:
        if conn.handshaking:
            self._handshake(conn)
            return
        if conn.lingering:
            self._drain(conn)
            return
        self._read_ready(conn, idle_ok=False)

    def _read_ready(self, conn: Connection, *, idle_ok: bool = True) -> bool:
        """Read what is there; True when nothing at all was (EAGAIN at once) and ``idle_ok``: the caller
        then judges the idle client. Otherwise, at EAGAIN, wait for more (re-arming the idle timer)."""
        recv = conn.sock.recv
        first = True
        while True:
            try:
                data = recv(_FIRST_RECV if conn.received < _FIRST_RECV else _BULK_RECV, _RECV_FLAGS)
            except BlockingIOError:
                if first and idle_ok:
                    return True
                self._wait_for_request(conn)
                return False
            except OSError:
                self._close(conn)
                return False
            first = False
            self._stats.bytes_received += len(data)
            if not self._receive(conn, data):
                return False

    def _wait_for_request(self, conn: Connection) -> None:
        if not conn.events & READ:
            self.waiter.watch_read(conn)
            conn.events = READ
        if conn.listener is None:
            # HTTP's deadlines are armed when a request starts or a reply ends.
            self._arm_deadline(self._reading, conn, self._idle_timeout)

    def _receive(self, conn: Connection, data: bytes, *, quick: bool = True) -> bool:
        """Feed one chunk; True when more data is needed (the caller reads again)."""
        conn.receive_data(data)
        listener = conn.listener
        if listener is not None and data and conn in listener.idle:
            del listener.idle[conn]  # the next request has begun: now it has request_timeout to arrive
            self._arm_deadline(listener.requests, conn, listener.config.request_timeout)
        event = conn.next_event(quick=quick)
        if event is NEED_DATA:
            if not data:
                self._close(conn)  # the peer closed before sending anything
                return False
            if listener is not None:
                self._send_interim(conn)
            elif conn not in self._started:
                self._arm_deadline(self._started, conn, self._request_deadline)
            return self._count_request(conn)
        self._uncount_request(conn)
        self._handle_event(conn, event)
        return False

    def _send_interim(self, conn: Connection) -> None:
        """Send ``100 Continue`` to an HTTP client that waits for it before sending its body."""
        assert isinstance(conn, HttpConnection)
        interim = conn.http.data_to_send()
        if interim:
            # 25 bytes on a connection whose send buffer is empty (nothing else is sent while a request
            # is read): it goes out whole, or the client is gone and the next read says so.
            with contextlib.suppress(OSError):
                conn.sock.send(interim, _SEND_FLAGS)

    def _count_request(self, conn: Connection) -> bool:
        """Account the incomplete request's bytes; False (and the connection answered) over the limit."""
        buffered = conn.buffered
        self._held_requests += buffered - conn.counted
        conn.counted = buffered
        if self._held_requests + self._held_reply_bytes <= self._max_buffered:
            return True
        logger.warning(
            "refused a request at %d bytes: the server holds %d bytes for clients (max_buffered %d)",
            buffered,
            self._held_requests + self._held_reply_bytes,
            self._max_buffered,
        )
        self._stats.dropped += 1
        self._stats.refused += 1
        self._uncount_request(conn)
        text = (
            f"request refused: the server holds too much data for clients (max_buffered {self._max_buffered})"
        )
        self._send_reply(conn, encode_reply(Reply(Result.ERROR, text)))
        return False

    def _uncount_request(self, conn: Connection) -> None:
        if conn.counted:
            self._held_requests -= conn.counted
            conn.counted = 0
        self._started.pop(conn, None)
        listener = conn.listener
        if listener is not None:
            listener.requests.pop(conn, None)

    def _handle_event(self, conn: Connection, event: Event) -> None:
        self._reading.pop(conn, None)
        if conn.events and (conn.listener is None or type(event) is not Request):
            # Kea pauses the inactivity timer while a command runs; and a client that closes or sends
            # garbage now must not wake us: stop watching until the reply is ready. (A kept-alive HTTP
            # client stays watched through an inline command: nothing can wake us meanwhile, and its
            # next request needs the watch again; _handle unwatches it for a command that runs elsewhere.)
            self.waiter.unwatch(conn)
            conn.events = 0
        if type(event) is Request:
            self._handle(conn, event)
        elif type(event) is Rejected:
            self._rejected(conn, event)
        elif type(event) is Unparsed:
            self._decode_elsewhere(conn, event.document)

    def _rejected(self, conn: Connection, event: Rejected) -> None:
        if event.status is not None:
            assert isinstance(conn, HttpConnection)
            self._stats.http_refused += 1
            logger.info(
                "refused an http request from %s with %d: %s",
                conn.peer.address,
                event.status,
                conn.http.rejected_detail or "bad request",
            )
        self._send_reply(conn, event.reply, status=event.status)

    def _decode_elsewhere(self, conn: Connection, document: bytes) -> None:
        """Decode a large request in a worker thread, then handle it here."""
        waiter = self.waiter

        def decode() -> None:
            event = conn.decode(document)
            waiter.post(lambda: self._decoded(conn, event))

        self._decoder.submit(decode)

    def _decoded(self, conn: Connection, event: Request | Rejected) -> None:
        if self._conns.get(conn.fd) is not conn:
            return  # dropped meanwhile (the stop's grace period ended)
        self.now = time.monotonic()
        _trim_memory()  # the request's bytes and the decoder's transient copies were just freed
        if type(event) is Request:
            self._handle(conn, event)
        else:
            assert type(event) is Rejected
            self._rejected(conn, event)

    # --- running commands ---------------------------------------------------------------------------

    def _handle(self, conn: Connection, request: Request) -> None:
        if conn.listener is None:
            result = self._dispatch(request, conn.sock)  # type: ignore[arg-type]  # a unix socket
        else:
            assert isinstance(conn, HttpConnection)
            result = self._dispatch(request, None, conn.peer)
        if type(result) is bytes:
            self._send_reply(conn, result)
            return
        if conn.events:
            self.waiter.unwatch(conn)
            conn.events = 0
        self._start_call(conn, result)  # type: ignore[arg-type]  # the only other case: a Call

    def _start_call(self, conn: Connection, call: Call) -> None:
        if self._stopping:
            self._send_reply(conn, _shutting_down_reply())
            return
        conn.call = call
        timeout = call.timeout
        if timeout is not None:
            self._call_deadlines[conn] = time.monotonic() + timeout
            self.waiter.deadline_added()
        if self._active < self._max_concurrent:
            self._launch(conn, call)
        else:
            self._queued.append(conn)
            self._stats.waiting = len(self._queued)

    def _launch(self, conn: Connection, call: Call) -> None:
        self._active += 1
        self._stats.running = self._active
        if call.is_coroutine and self.waiter.start_task(conn, call):
            return
        waiter = self.waiter
        run = call.run if not call.is_coroutine else lambda: asyncio.run(call.run_async())

        def job() -> None:
            reply = run()
            waiter.post(lambda: self.call_done(conn, call, reply))

        self._pool.submit(job)

    def call_done(self, conn: Connection, call: Call, reply: bytes | None) -> None:
        """A call ended (``reply`` None: its task was cancelled); on the I/O thread."""
        self.now = time.monotonic()
        self._active -= 1
        self._stats.running = self._active
        self._start_queued()
        if conn.call is not call or self._conns.get(conn.fd) is not conn:
            if reply is not None:
                logger.warning(
                    "command %r finished after its client was answered; its result is dropped", call.name
                )
            return
        conn.call = None
        conn.task = None
        self._call_deadlines.pop(conn, None)
        self._send_reply(conn, reply if reply is not None else _shutting_down_reply())

    def _start_queued(self) -> None:
        queued = self._queued
        while queued and self._active < self._max_concurrent:
            conn = queued.popleft()
            call = conn.call
            if call is not None and self._conns.get(conn.fd) is conn:
                self._launch(conn, call)
        self._stats.waiting = len(queued)

    def _call_timed_out(self, conn: Connection) -> None:
        call = conn.call
        assert call is not None
        conn.call = None
        if conn.task is not None:
            conn.task.cancel()  # a coroutine can be cancelled; a thread cannot, its result is dropped later
            conn.task = None
        logger.warning(
            "command %r did not finish within %g s; answering with a timeout", call.name, call.timeout
        )
        text = f"Error during command processing: '{call.name}' did not finish within {call.timeout:g} s"
        self._send_reply(conn, encode_reply(Reply(Result.ERROR, text)))

    # --- writing ------------------------------------------------------------------------------------

    def _send_reply(
        self, conn: Connection, reply: bytes, *, already: int = 0, status: int | None = None
    ) -> None:
        """Send ``reply`` (of which the socket already took ``already`` bytes), or keep it for later.

        Over HTTP the reply is framed first: a ``200`` response, or the refusal with HTTP ``status``.
        """
        self._reading.pop(conn, None)
        self._uncount_request(conn)
        if conn.listener is not None:
            # Over the limit is decided on the reply, before framing: a framed response cannot be
            # replaced once h11 has written its head.
            if len(reply) >= _UNCOUNTED_REPLY and not self._fits(len(reply) + _HTTP_HEAD_ROOM):
                reply = self._over_limit_reply(len(reply))
            reply = conn.frame(reply, status, closing=self._stopping)
            if not reply:
                self._close(conn)  # nothing HTTP can say to a client that has not asked yet
                return
            if len(reply) >= _UNCOUNTED_REPLY:
                self._hold_reply(reply, force=True)
        elif len(reply) >= _UNCOUNTED_REPLY and not self._hold_reply(reply):
            reply = self._over_limit_reply(len(reply))  # decided before a byte is sent: a whole reply
        if len(reply) >= _TRIM_AFTER or conn.received >= _TRIM_AFTER:
            _trim_memory()  # the encoder's (or the request's) transient copies were just freed
        conn.start_reply(reply)  # counted until the connection closes (see _release_reply)
        sent = already
        if not already:
            try:
                sent = conn.sock.send(reply, _SEND_FLAGS)
            except BlockingIOError:
                sent = 0
            except OSError as error:
                self._drop(conn, f"client went away ({error.strerror})")
                return
        self._stats.bytes_sent += sent
        if sent == len(reply):
            self._reply_sent(conn)
            return
        conn.advance(sent)
        self.waiter.watch_write(conn)
        conn.events = WRITE
        self._arm_deadline(self._writing, conn, self._write_deadline)

    def _fits(self, size: int) -> bool:
        """Whether ``size`` more bytes held for clients stay within ``max_buffered``."""
        return self._held_requests + self._held_reply_bytes + size <= self._max_buffered

    def _hold_reply(self, reply: bytes, *, force: bool = False) -> bool:
        """Count a reply kept for a slow reader; False when it would pass ``max_buffered`` (unless
        ``force``: the caller already checked, with room for what it added since)."""
        key = id(reply)
        held = self._held_replies.get(key)
        if held is not None:
            held[1] += 1  # the same buffer, shared by another client: costs nothing more
            return True
        size = len(reply)
        if not force and not self._fits(size):
            return False
        self._held_replies[key] = [size, 1]
        self._held_reply_bytes += size
        return True

    def _release_reply(self, conn: Connection) -> None:
        size = conn.reply_size
        if not size:
            return
        pending = conn.pending
        key = id(pending.obj) if pending.obj is not None else 0
        conn.release_reply()
        held = self._held_replies.get(key)
        if held is None:
            return
        held[1] -= 1
        if held[1] == 0:
            del self._held_replies[key]
            self._held_reply_bytes -= held[0]

    def _over_limit_reply(self, size: int) -> bytes:
        logger.warning(
            "refused to hold a %d-byte reply: the server holds %d bytes for clients (max_buffered %d)",
            size,
            self._held_requests + self._held_reply_bytes,
            self._max_buffered,
        )
        self._stats.dropped += 1
        self._stats.refused += 1
        text = (
            f"the {size}-byte reply would pass the server's limit for data held for clients "
            f"(max_buffered {self._max_buffered}); try again later"
        )
        return encode_reply(Reply(Result.ERROR, text))

    def on_writable(self, conn: Connection) -> None:
        if conn.handshaking:
            self._handshake(conn)
            return
        self._write_ready(conn)

    def _write_ready(self, conn: Connection) -> bool:
        """Send what the socket takes; True when it took nothing at all."""
        try:
            sent = conn.sock.send(conn.pending, _SEND_FLAGS)
        except BlockingIOError:
            return True
        except OSError as error:
            self._drop(conn, f"client went away ({error.strerror})")
            return False
        self._stats.bytes_sent += sent
        if conn.advance(sent):
            self._reply_sent(conn)
            return False
        self._arm_deadline(self._writing, conn, self._write_deadline)
        return False

    def _reply_sent(self, conn: Connection) -> None:
        """The whole reply went out: close, or (HTTP keep-alive) wait for the client's next request."""
        self._stats.served += 1
        if self._stopping or not conn.keep_alive:
            if conn.listener is not None and not self._stopping:
                self._linger(conn)
            else:
                self._close(conn)
            return
        assert isinstance(conn, HttpConnection)
        listener = conn.listener
        assert listener is not None
        if conn.events == WRITE:
            self._watch(conn, READ)  # still watched for reading after an inline command: no syscall
        self._writing.pop(conn, None)
        big = conn.reply_size >= _TRIM_AFTER or conn.received >= _TRIM_AFTER
        self._release_reply(conn)
        conn.next_cycle()
        if big:
            _trim_memory()
        if conn.http.request_started:
            # The client sent its next request before this reply was out (pipelining): serve it from the
            # loop rather than from here, so a burst of requests cannot recurse.
            if conn.events:
                self.waiter.unwatch(conn)  # the posted call reads on; nothing else may meanwhile
                conn.events = 0
            self._arm_deadline(listener.requests, conn, listener.config.request_timeout)
            self.waiter.post(lambda: self._next_http_request(conn))
            return
        self._arm_deadline(listener.idle, conn, listener.config.idle_timeout)
        self._wait_for_request(conn)

    def _linger(self, conn: Connection) -> None:
        """Close an HTTP connection as RFC 9112 section 9.6 asks: half-close, then read and drop what the
        client still sends until it closes too (or ``_LINGER`` passes).

        Closing with unread bytes in the socket makes the kernel send a reset, which can destroy the
        response before the client reads it: a client in the middle of uploading a refused 100 MiB body
        would get "connection reset" instead of its 413.
        """
        assert isinstance(conn, HttpConnection)
        listener = conn.listener
        assert listener is not None
        listener.forget(conn)
        self._writing.pop(conn, None)
        self._uncount_request(conn)
        self._release_reply(conn)
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)  # already gone
            return
        conn.lingering = True
        self._arm_deadline(self._lingering, conn, _LINGER)
        self._drain(conn)

    def _drain(self, conn: Connection) -> None:
        """Read and drop what a lingering connection's client sends; close at its end of file."""
        while True:
            try:
                data = conn.sock.recv(_DRAIN_RECV, _RECV_FLAGS)
            except BlockingIOError:
                self._watch(conn, READ)
                return
            except OSError:
                data = b""
            if not data:
                self._close(conn)
                return
            self._stats.bytes_received += len(data)

    def _next_http_request(self, conn: HttpConnection) -> None:
        if self._conns.get(conn.fd) is not conn or conn.reply_size or conn.call is not None:
            return  # closed, or busy with a request again (its reply schedules the next one)
        self.now = time.monotonic()
        event = conn.next_event()
        if event is NEED_DATA:
            if self._count_request(conn):
                self._wait_for_request(conn)
            return
        self._uncount_request(conn)
        self._handle_event(conn, event)

    def _arm_deadline(self, queue: OrderedDict[Connection, float], conn: Connection, seconds: float) -> None:
        """(Re-)arm ``conn``'s deadline in ``queue``, ``seconds`` from now; every entry of a queue has the
        same timeout, so the queue stays in deadline order. The clock is read here, not once per
        wake-up: handlers run in between and may be slow."""
        queue[conn] = time.monotonic() + seconds
        queue.move_to_end(conn)
        if len(queue) == 1:
            self.waiter.deadline_added()

    # --- ending -------------------------------------------------------------------------------------

    def _close(self, conn: Connection) -> None:
        if conn.events:
            self.waiter.unwatch(conn)
            conn.events = 0
        self._reading.pop(conn, None)
        self._writing.pop(conn, None)
        self._call_deadlines.pop(conn, None)
        self._uncount_request(conn)
        if conn.listener is not None:
            conn.listener.forget(conn)
            self._lingering.pop(conn, None)
        del self._conns[conn.fd]
        self._stats.open -= 1
        big = conn.reply_size >= _TRIM_AFTER or conn.received >= _TRIM_AFTER
        self._release_reply(conn)
        conn.call = None
        conn.sock.close()
        if big:
            _trim_memory()
        if not self._accepting and not self._stopping:
            self._accepting = True
            self.waiter.resume_accepting()
        if self._stopping and not self._conns:
            self._finish()

    def _drop(self, conn: Connection, why: str) -> None:
        """Give up on a reply: log who lost how much, count it, close."""
        self._stats.dropped += 1
        logger.warning(
            "dropped reply to %s after %d of %d bytes: %s", _who(conn), conn.sent, conn.reply_size, why
        )
        if conn.task is not None:
            conn.task.cancel()
            conn.task = None
        self._close(conn)

    def next_deadline(self) -> float | None:
        """When :meth:`on_timer` must run next, or None."""
        queues = (self._reading, self._writing, self._started, self._lingering)
        candidates = [next(iter(queue.values())) for queue in queues if queue]
        if self._call_deadlines:
            candidates.append(min(self._call_deadlines.values()))
        for listener in self.http_listeners.values():
            deadline = listener.next_deadline()
            if deadline is not None:
                candidates.append(deadline)
        if not self._accepting and not self._stopping:
            candidates.append(self._accept_paused_until)
        if self._grace_end is not None:
            candidates.append(self._grace_end)
        if self._maintenance_at is not None and not self._stopping:
            candidates.append(self._maintenance_at)
        return min(candidates) if candidates else None

    def on_timer(self) -> None:
        """Expire what is due (``self.now`` is current)."""
        now = self.now
        if self._grace_end is not None and now >= self._grace_end:
            self._end_grace()
            return
        reading = self._reading
        for conn in _expired(reading, now):
            # Judge the deadline only after reading what is ready: after SIGSTOP/SIGCONT (a container
            # freeze, a debugger) whole requests may be waiting in the socket buffer.
            if not self._read_ready(conn) or self._conns.get(conn.fd) is not conn:
                continue
            if conn.events:
                self.waiter.unwatch(conn)
                conn.events = 0
            # Kea's reply on its inactivity timer, naming any partial command it throws away.
            logger.info("connection idle for %.3g s; answering with a timeout", self._idle_timeout)
            self._stats.timed_out += 1
            self._send_reply(conn, conn.timeout_reply())
        started = self._started
        for conn in _expired(started, now):
            if self._read_ready(conn) and self._conns.get(conn.fd) is conn and conn.counted:
                if conn.events:
                    self.waiter.unwatch(conn)
                    conn.events = 0
                logger.warning(
                    "request from %s incomplete after %.3g s (%d bytes); answering with a timeout",
                    _who(conn),
                    self._request_deadline,
                    conn.buffered,
                )
                self._stats.timed_out += 1
                self._send_reply(conn, conn.timeout_reply())
        writing = self._writing
        for conn in _expired(writing, now):
            if self._write_ready(conn):
                self._stats.dropped_slow += 1
                self._drop(
                    conn, f"no write progress for {self._write_deadline:.3g} s (the client is not reading)"
                )
        for listener in self.http_listeners.values():
            self._expire_http(listener, now)
        for conn in _expired(self._lingering, now):
            self._close(conn)  # the client kept sending (or never closed): enough
        if self._call_deadlines:
            for conn, deadline in list(self._call_deadlines.items()):
                if deadline <= now:
                    del self._call_deadlines[conn]
                    if conn.call is not None and self._conns.get(conn.fd) is conn:
                        self._call_timed_out(conn)
        if not self._accepting and not self._stopping and now >= self._accept_paused_until:
            self._accepting = True
            self.waiter.resume_accepting()
        due = self._maintenance_at
        if self._maintenance is not None and due is not None and now >= due and not self._stopping:
            self._maintenance_at = self._maintenance(now)

    def _expire_http(self, listener: HttpListener, now: float) -> None:
        idle = listener.idle
        for conn in _expired(idle, now):
            # As for unix clients: read what is there first (a frozen server may find a request waiting).
            if self._read_ready(conn) and self._conns.get(conn.fd) is conn:
                self._close(conn)  # kept alive for idle_timeout with no request: close quietly, as Kea does
        requests = listener.requests
        for conn in _expired(requests, now):
            if conn.handshaking:
                self._stats.timed_out += 1
                logger.info("tls handshake not done after %.3g s; closing", listener.config.request_timeout)
                self._close(conn)
                continue
            self._read_ready(conn)
            if self._conns.get(conn.fd) is not conn or conn.reply_size or conn.call is not None:
                continue  # answered, closed, or its command is running: the request did arrive
            if conn.events:
                self.waiter.unwatch(conn)
                conn.events = 0
            assert isinstance(conn, HttpConnection)
            logger.info(
                "http request from %s incomplete after %.3g s (%d bytes); answering 408",
                conn.peer.address,
                listener.config.request_timeout,
                conn.buffered,
            )
            self._stats.timed_out += 1
            conn.http.rejected_detail = "request timeout"
            self._send_reply(conn, conn.timeout_reply(), status=conn.timeout_status)

    def begin_stop(self, grace: float) -> None:
        """Stop accepting and drain for ``grace`` seconds (on the I/O thread).

        The record says "stopping" before the socket goes, so a probe meanwhile is not misled. Clients
        already waiting in the listen backlog are accepted and answered, not reset: built-ins as usual,
        other commands (which will not get to run) with result 1 "Server is shutting down", as are
        commands still queued behind a running handler.
        """
        if self._stopping:
            self._grace_end = min(self._grace_end or self.now + grace, time.monotonic() + grace)
            return
        self._stopping = True
        self._grace_end = time.monotonic() + grace
        try:
            self._endpoint.lock.mark_stopping()
        except (
            OSError
        ) as error:  # a probe then says "running" while we drain: worth a line, not a failed stop
            logger.warning("cannot mark %s as stopping: %s", self._endpoint.lock.lock_path, error.strerror)
        self._endpoint.remove_socket()
        waiter = self.waiter
        if self._accepting:
            self._accepting = False
            waiter.pause_accepting()
        while self._accept_some(drain=True):
            pass
        self._endpoint.close_listener()
        self._stop_http()
        for conn in list(self._queued):
            if conn.call is not None and self._conns.get(conn.fd) is conn:
                conn.call = None
                self._call_deadlines.pop(conn, None)
                self._send_reply(conn, _shutting_down_reply())
        self._queued.clear()
        self._stats.waiting = 0
        for conn in list(self._reading):
            if conn.received or self._conns.get(conn.fd) is not conn:
                continue
            # Connected but silent: read once more, then answer rather than cut it off.
            if self._read_ready(conn) and self._conns.get(conn.fd) is conn:
                if conn.events:
                    waiter.unwatch(conn)
                    conn.events = 0
                self._send_reply(conn, _shutting_down_reply())
        logger.info(
            "stopping: %s removed; draining %d connections for up to %g s",
            self._endpoint.socket_path,
            len(self._conns),
            grace,
        )
        waiter.deadline_added()
        if not self._conns:
            self._finish()

    def _stop_http(self) -> None:
        """Stop accepting HTTP: serve what is in the backlogs, close the listeners and the kept-alive
        connections waiting for a next request (an HTTP client retries those; Kea closes them too)."""
        for listener in self.http_listeners.values():
            while self._accept_http(listener, drain=True):
                pass
            listener.close()
            for conn in list(listener.idle):
                if self._conns.get(conn.fd) is conn and self._read_ready(conn):
                    self._close(conn)

    def _end_grace(self) -> None:
        """The grace period is over: answer everyone still waiting, drop unsent replies, and finish."""
        reply = _shutting_down_reply()
        for conn in list(self._conns.values()):
            if self._conns.get(conn.fd) is not conn:
                continue
            if conn.lingering:
                self._close(conn)  # answered already
                continue
            if conn.reply_size:
                self._drop(conn, "the server is stopping and the grace period ended")
                continue
            if conn.call is not None:
                logger.warning(
                    "command %r still running at the end of the stop grace period; answering %s",
                    conn.call.name,
                    _who(conn),
                )
                if conn.task is not None:
                    conn.task.cancel()
                    conn.task = None
            elif conn.received:
                logger.warning(
                    "dropped a partial request of %d bytes from %s at the end of the stop grace period",
                    conn.buffered,
                    _who(conn),
                )
            conn.call = None
            self._stats.dropped += 1
            framed = conn.frame(reply, None, closing=True)
            with contextlib.suppress(OSError):
                # small: it fits any socket buffer holding nothing
                self._stats.bytes_sent += conn.sock.send(framed, _SEND_FLAGS)
            self._close(conn)
        self._finish()

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        self._grace_end = None
        self._pool.close()
        self._decoder.close()
        self.waiter.finished()

    def close_all(self) -> None:
        """Close every connection and the listener (the engine is being torn down)."""
        for conn in list(self._conns.values()):
            if conn.task is not None:
                conn.task.cancel()
                conn.task = None
            self._close(conn)
        self._endpoint.close_listener()
        for listener in self.http_listeners.values():
            listener.close()
        self._pool.close()
        self._decoder.close()
        _engines.discard(self)

    def forget_after_fork(self) -> None:
        """In a forked child: close our copies of the listener and the connections, touch nothing else.

        Never unregister anything from the waiter: an epoll instance is shared with the parent across
        fork(), and unregistering here would stop the parent serving.
        """
        for conn in self._conns.values():
            if isinstance(conn.sock, TlsStream):
                # Closing a TLS socket may write an alert, which would end the parent's session.
                os.close(conn.fd)
            else:
                conn.sock.close()
        self._conns.clear()
        for listener in self.http_listeners.values():
            listener.close()
        self._endpoint.forget_after_fork()

    @property
    def connections_by_fd(self) -> dict[int, Connection]:
        """The open connections by descriptor (the epoll loop's lookup; do not modify)."""
        return self._conns


def _expired(queue: OrderedDict[Connection, float], now: float) -> Iterator[Connection]:
    """Take from ``queue`` (kept in deadline order) each connection whose deadline has passed, first due
    first; the caller may re-arm or close it meanwhile."""
    while queue:
        conn, deadline = next(iter(queue.items()))
        if deadline > now:
            return
        del queue[conn]
        yield conn


def _who(conn: Connection) -> str:
    if conn.remote is not None:
        return f"{conn.remote.address} port {conn.remote.port}"
    assert isinstance(conn.sock, socket.socket)
    try:
        peer = read_peer_credentials(conn.sock)
    except OSError:
        return "a client"
    return f"pid {peer.pid} (uid {peer.uid})"
