"""SIGTERM and SIGINT for every server of the process: stop them all cleanly, then act as the signal would.

One handler per signal serves all servers (two servers that each installed their own handler used to leave
the first one serving). It asks every server to stop, waits for the thread-embedded ones (their drain is
bounded by the stop grace), and then, unless every server was registered by an explicit
``install_signal_handlers()`` (the daemon decides what happens next), ends as the signal would: it puts the
previous disposition back and calls the daemon's own handler if it had one, raises ``KeyboardInterrupt``
for SIGINT's default, or re-sends the signal to the process under ``SIG_DFL``. An asyncio server cannot be
waited for inside a handler that runs on its own loop's thread, nor can a server still starting on the main
thread: their ``serve_forever()`` or ``stop()`` finishes the stop and then delivers the signal
(:func:`server_finished`).

Handlers run on the main thread between bytecodes, possibly inside the server's own code: nothing here
takes a lock, and servers are only asked to stop (a flag and a wake-up).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import FrameType
from typing import Any, Final, Protocol

__all__ = [
    "DEFAULT_SIGNALS",
    "Stoppable",
    "has_pending",
    "request_shutdown_exit",
    "server_finished",
    "unwatch",
    "watch",
]

DEFAULT_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)


class Stoppable(Protocol):
    def request_stop(self, grace: float | None = None) -> None: ...

    def wait_for_stop(self) -> bool:
        """Block until stopped if that can be done from a signal handler (False: it cannot)."""
        ...

    @property
    def is_serving(self) -> bool: ...


@dataclass
class _Watched:
    server: Stoppable
    ends_process: bool


_watched: list[_Watched] = []
_previous: dict[int, Any] = {}
_pending: list[tuple[int, FrameType | None]] = []
_shutdown_exit: list[int] = []


def watch(server: Stoppable, signals: Iterable[int] = DEFAULT_SIGNALS, *, ends_process: bool = True) -> bool:
    """Stop ``server`` on these signals; False (nothing done) when not called from the main thread.

    Args:
        server: the server.
        signals: the signal numbers.
        ends_process: after the stop, act as the signal would (False: only stop; the daemon goes on).
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    known = next((entry for entry in _watched if entry.server is server), None)
    if known is None:
        _watched.append(_Watched(server, ends_process))
    elif not ends_process:
        known.ends_process = False  # install_signal_handlers(): the daemon decides what follows the stop
    for number in signals:
        before = signal.getsignal(number)
        if before is _handle:
            continue
        if before is signal.SIG_IGN:
            continue  # the daemon chose to ignore it: not ours to change
        _previous[number] = before  # also when someone replaced ours meanwhile: theirs is chained now
        signal.signal(number, _handle)
    return True


def unwatch(server: Stoppable) -> None:
    """Forget ``server``; with none left, put the previous handlers back (main thread only)."""
    _watched[:] = [entry for entry in _watched if entry.server is not server]
    if not _watched and not _pending and threading.current_thread() is threading.main_thread():
        _restore()


def _restore() -> dict[int, Any]:
    previous = dict(_previous)
    for number, before in previous.items():
        if signal.getsignal(number) is _handle:
            signal.signal(number, before if before is not None else signal.SIG_DFL)
    _previous.clear()
    return previous


def request_shutdown_exit(exit_value: int) -> bool:
    """The ``shutdown`` command in a thread-embedded daemon: stop every server, then raise
    ``SystemExit(exit_value)`` in the main thread. False when no handler of ours can do it."""
    if signal.SIGTERM not in _previous or signal.getsignal(signal.SIGTERM) is not _handle:
        return False
    if not any(entry.ends_process for entry in _watched):
        return False
    _shutdown_exit.append(exit_value)
    # A real signal, not _thread.interrupt_main(): only a real one interrupts a main thread blocked in a
    # system call (a lock, a sleep), as a daemon's main thread usually is.
    signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGTERM)
    return True


def _handle(number: int, frame: FrameType | None) -> None:
    watched = [entry for entry in _watched if entry.server.is_serving]
    for entry in watched:
        entry.server.request_stop()
    if not any(entry.ends_process for entry in watched) and not _shutdown_exit:
        return  # install_signal_handlers(): stopping was all that was asked
    waiting_on_loop = False
    for entry in watched:
        if not entry.server.wait_for_stop():
            waiting_on_loop = True
    if waiting_on_loop:
        _pending.append((number, frame))  # delivered when serve_forever() has finished the stop
        return
    _deliver(number, frame)


def has_pending() -> bool:
    """A signal arrived that waits for a server's stop to finish before it is delivered."""
    return bool(_pending)


def server_finished(server: Stoppable) -> None:
    """A server finished its stop (call on the main thread): deliver a signal that waited for it."""
    if threading.current_thread() is not threading.main_thread():
        return
    _watched[:] = [entry for entry in _watched if entry.server is not server]
    if _pending and not any(entry.server.is_serving for entry in _watched):
        number, frame = _pending[0]
        _pending.clear()
        _deliver(number, frame)
    elif not _watched and not _pending and threading.current_thread() is threading.main_thread():
        _restore()


def _deliver(number: int, frame: FrameType | None) -> None:
    _watched.clear()
    previous = _restore()
    if _shutdown_exit:
        exit_value = _shutdown_exit.pop()
        _shutdown_exit.clear()
        raise SystemExit(exit_value)
    before = previous.get(number, signal.SIG_DFL)
    if callable(before):
        handler: Callable[[int, FrameType | None], Any] = before
        handler(number, frame)  # the daemon's own handler, or SIGINT's KeyboardInterrupt
        return
    os.kill(os.getpid(), number)  # under SIG_DFL again: end exactly as the signal would have
