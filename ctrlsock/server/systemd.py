"""systemd socket activation (``LISTEN_FDS``) and readiness notification (``sd_notify``), without libsystemd.

Both protocols are small, stable and documented in sd_listen_fds(3) and sd_notify(3); reimplementing them
keeps ctrlsock free of a C dependency and works the same under PID 1, ``systemd-socket-activate`` and any
other supervisor that speaks them (s6, dinit's socket activation, podman's ``--preserve-fds``...).

Passed descriptors start at fd 3 (``SD_LISTEN_FDS_START``) and are meant for the process whose pid is in
``LISTEN_PID``: a child that inherits the environment but not the role must not adopt them, which is why the
pid check is not optional. This module imports nothing from ctrlsock except errors, so the server can use it
before anything else is set up.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Final

from ctrlsock.errors import ServerError

__all__ = [
    "SD_LISTEN_FDS_START",
    "is_unix_stream_listener",
    "listen_fds",
    "listen_fds_with_names",
    "notify",
]

SD_LISTEN_FDS_START: Final = 3
"""The first passed descriptor, as in ``<systemd/sd-daemon.h>``."""

DEFAULT_FD_NAME: Final = "unknown"
"""The name sd_listen_fds_with_names(3) reports when ``LISTEN_FDNAMES`` is not set."""

_LISTEN_VARIABLES: Final = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


def _parse_positive_int(name: str, value: str) -> int:
    # libsystemd's parse_pid()/safe_atoi() reject signs, spaces and junk; int() alone would accept " 3", "+3"
    # and "3_0", so check the digits first.
    if not value.isascii() or not value.isdigit():
        raise ServerError(f"${name} must be a decimal number, not {value!r}")
    return int(value)


def _read_listen_environment() -> list[tuple[str, int]]:
    """The (name, fd) pairs passed to this process, or ``[]`` when none are meant for it."""
    pid_text = os.environ.get("LISTEN_PID")
    if pid_text is None:
        return []
    if _parse_positive_int("LISTEN_PID", pid_text) != os.getpid():
        # Meant for another process (our parent, typically, which exported it and then forked us).
        return []
    fds_text = os.environ.get("LISTEN_FDS")
    if fds_text is None:
        return []
    count = _parse_positive_int("LISTEN_FDS", fds_text)
    if count == 0:
        return []
    names_text = os.environ.get("LISTEN_FDNAMES")
    if names_text is None:
        names = [DEFAULT_FD_NAME] * count
    else:
        names = names_text.split(":")
        if len(names) != count:
            raise ServerError(f"$LISTEN_FDNAMES names {len(names)} descriptors but $LISTEN_FDS is {count}")
    return [(name, SD_LISTEN_FDS_START + index) for index, name in enumerate(names)]


def listen_fds_with_names(*, unset_environment: bool = True) -> list[tuple[str, socket.socket]]:
    """Adopt the sockets the service manager passed to this process, with their ``FileDescriptorName=``.

    Follows sd_listen_fds_with_names(3): the descriptors are used only when ``$LISTEN_PID`` is this
    process's pid; they are fds 3 to ``3 + $LISTEN_FDS - 1``, each is made close-on-exec (the manager
    passes them inheritable, and a daemon's children must not keep its listener alive), and each gets the
    matching entry of ``$LISTEN_FDNAMES`` (``"unknown"`` when that variable is unset).

    Args:
        unset_environment: remove ``LISTEN_PID``, ``LISTEN_FDS`` and ``LISTEN_FDNAMES`` from ``os.environ``
            (also when nothing was adopted, as libsystemd does), so that children do not see them and a
            second call cannot wrap the same descriptors in a second socket object.

    Returns:
        ``(name, socket)`` pairs in descriptor order; ``[]`` when nothing was passed to this process. The
        sockets own their descriptors: closing one closes the passed fd.

    Raises:
        ServerError: the variables are malformed, or a passed descriptor is not an open socket.
    """
    try:
        passed = _read_listen_environment()
        adopted: list[tuple[str, socket.socket]] = []
        try:
            for name, fd in passed:
                adopted.append((name, _adopt(fd)))
        except BaseException:
            for _, sock in adopted:
                sock.detach()  # leave the descriptors as they were passed; the caller decides
            raise
        return adopted
    finally:
        if unset_environment:
            for variable in _LISTEN_VARIABLES:
                os.environ.pop(variable, None)


def listen_fds(*, unset_environment: bool = True) -> list[socket.socket]:
    """Adopt the sockets the service manager passed to this process (sd_listen_fds(3)).

    The same as :func:`listen_fds_with_names` without the names.
    """
    return [sock for _, sock in listen_fds_with_names(unset_environment=unset_environment)]


def _adopt(fd: int) -> socket.socket:
    try:
        os.set_inheritable(fd, False)
        # socket(fileno=) asks the kernel for the family, type and protocol (SO_DOMAIN, SO_TYPE,
        # SO_PROTOCOL), and fails with ENOTSOCK for a FIFO or a file passed by ListenFIFO= and friends.
        return socket.socket(fileno=fd)
    except OSError as error:
        raise ServerError(
            f"passed descriptor {fd} is not a usable socket: {error.strerror or error}"
        ) from error


def is_unix_stream_listener(sock: socket.socket, path: Path | str | None = None) -> bool:
    """Whether ``sock`` is a listening ``AF_UNIX`` ``SOCK_STREAM`` socket (sd_is_socket_unix(3)).

    Args:
        sock: the socket to check, typically one from :func:`listen_fds`.
        path: when given, also require the socket to be bound to exactly this path (compared as bytes,
            as the kernel stores it: no normalisation, no symlink resolution).
    """
    try:
        family = sock.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN)
        kind = sock.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)
        accepting = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    except OSError:
        return False  # closed, or not a socket at all
    if family != socket.AF_UNIX or kind != socket.SOCK_STREAM or not accepting:
        return False
    if path is None:
        return True
    try:
        bound = sock.getsockname()
    except OSError:
        return False
    # Python returns a str for a filesystem name and bytes (with the leading NUL) for an abstract one.
    bound_bytes = bound if isinstance(bound, bytes) else os.fsencode(bound)
    return bound_bytes == os.fsencode(path)


def _notify_address(value: str) -> str | bytes | None:
    if value.startswith("@"):
        # sd_notify(3): a leading '@' names a socket in the abstract namespace (a leading NUL byte).
        return b"\0" + os.fsencode(value[1:])
    if value.startswith("/"):
        return value
    return None  # relative paths are refused by libsystemd; "vsock:" addresses are not supported here


def notify(state: str, *, timeout: float = 5.0) -> bool:
    """Send a readiness/status message to the service manager (sd_notify(3)).

    ``state`` is one or more newline-separated assignments, e.g. ``"READY=1"``,
    ``"STATUS=serving 3 clients"``, ``"STOPPING=1"``, ``"RELOADING=1"``.

    The manager identifies the sender from the datagram's kernel credentials, so call this from the
    service's main process (or set ``NotifyAccess=all``). The environment variable is left in place:
    a ``Type=notify`` service sends ``READY=1`` and, later, ``STOPPING=1`` through the same socket.

    Args:
        state: the message.
        timeout: how long to wait when the manager's queue is full, in seconds; a daemon must not hang
            in its start-up because nobody reads its notifications.

    Returns:
        True when the message was sent, False when ``$NOTIFY_SOCKET`` is unset or unusable (not under a
        manager that wants notifications, or the socket is gone). Never raises for those.
    """
    value = os.environ.get("NOTIFY_SOCKET")
    if not value:
        return False
    address = _notify_address(value)
    if address is None:
        return False
    message = state.encode("utf-8")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(timeout)
            sent = sock.sendto(message, address)
    except OSError:
        # ENOENT / ECONNREFUSED: the manager went away; EAGAIN/timeout: it is not reading; EMSGSIZE...
        # Readiness is advisory for the daemon itself: it keeps serving either way.
        return False
    return sent == len(message)
