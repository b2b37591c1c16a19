"""Start-up and stop of the listening socket: lock, recovery, bind with the final mode, and the clean stop.

The order: take the lock (the proof), remove only a provably orphaned socket
(``recover.remove_orphans``, the only code that removes files), bind with the final permissions from the first
instant, and on stop remove the socket only if it is still the inode we bound, then clear the record and
release the lock. A socket passed by systemd is adopted instead of bound, and never unlinked.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

from ctrlsock.errors import (
    MAX_SOCKET_PATH,
    CtrlSockError,
    ServerError,
    SocketPathTooLongError,
    UnsafePathError,
)
from ctrlsock.lock import SocketLock, take_lock
from ctrlsock.names import bind_path_for
from ctrlsock.recover import check_directory_safe, remove_orphans, remove_own_socket
from ctrlsock.safepath import open_safe_directory

from . import systemd

__all__ = ["Endpoint", "open_endpoint"]

logger = logging.getLogger("ctrlsock.server")


@dataclass
class Endpoint:
    """A listening socket we serve on, with the lock that proves it is ours.

    Attributes:
        sock: the non-blocking, close-on-exec listening socket.
        socket_path: its path.
        lock: the held ``<socket>.lock``.
        activated: the socket was passed by systemd (never unlinked by us).
        inode: ``(st_dev, st_ino)`` of the socket file we bound, to unlink only our own on stop.
    """

    sock: socket.socket
    socket_path: Path
    lock: SocketLock
    activated: bool
    inode: tuple[int, int] | None
    mode: int = 0o600
    gid: int | None = None
    backlog: int = 128

    def rebind(self) -> socket.socket:
        """Bind a new listener at the path (its socket file was deleted under us); the caller serves on it
        and closes the old one.

        Raises:
            ServerError: the path is taken by something else, or binding failed.
        """
        try:
            sock, inode = _bind(self.socket_path, self.mode, self.gid, self.backlog)
        except OSError as error:
            raise ServerError(f"cannot bind {self.socket_path}: {error.strerror or error}") from error
        self.sock = sock
        self.inode = inode
        return sock

    def remove_socket(self) -> None:
        """Remove the socket path if it still names the socket we bound (a stop's first step).

        The listener stays open, so clients already waiting in its backlog can still be accepted.
        """
        if self.inode is None or self.activated:
            return
        inode, self.inode = self.inode, None
        try:
            action = remove_own_socket(self.lock, inode)
        except CtrlSockError as error:
            logger.warning("%s left in place: %s", self.socket_path, error)
            return
        if action is not None and not action.done:
            logger.warning("%s left in place: %s", self.socket_path, action.reason)

    def close_listener(self) -> None:
        """Stop accepting: remove the path (if still ours) and close the listening socket."""
        self.remove_socket()
        self.sock.close()

    def close(self) -> None:
        """Stop accepting, then clear the record and release the lock ("stopped cleanly")."""
        try:
            self.close_listener()
        finally:
            self.lock.release(clear_record=True)

    def forget_after_fork(self) -> None:
        """In a forked child: close our copy of the listener, remove nothing (the parent owns the path)."""
        self.inode = None
        self.sock.close()


def _create_directory(directory: Path, gid: int | None) -> None:
    """Create a missing socket directory (the last component only), private to us: 0700, or 0750 with the
    socket's group so its members can reach the socket. Its parent must pass the safe-path rule; an
    existing directory is left as it is (and judged by the caller)."""
    if os.path.lexists(directory):
        return
    parent = directory.parent
    with open_safe_directory(parent) as safe:
        if safe.writers_problem is not None:
            raise UnsafePathError(parent, safe.writers_problem)
        try:
            os.mkdir(directory.name, 0o700, dir_fd=safe.fileno())
        except FileExistsError:
            return  # made meanwhile by someone else: the caller's check judges it
        except OSError as error:
            raise ServerError(f"cannot create {directory}: {error.strerror or error}") from error
        fd = os.open(
            directory.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=safe.fileno()
        )
        try:
            if gid is not None:
                os.fchown(fd, -1, gid)
            os.fchmod(fd, 0o700 if gid is None else 0o750)  # mkdir applied the umask; set the bits exactly
        finally:
            os.close(fd)
    logger.info("created the socket directory %s", directory)


def _resolve_group(group: str | int) -> int:
    if isinstance(group, int):
        return group
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ServerError(f"no such group: {group}") from None


def _names_same_socket(sock: socket.socket, socket_path: Path) -> bool:
    """Whether ``sock`` is a unix stream listener bound to ``socket_path`` (by name, or by inode when the
    names differ only through a symlinked directory such as ``/var/run`` → ``/run``)."""
    if not systemd.is_unix_stream_listener(sock):
        return False
    if systemd.is_unix_stream_listener(sock, socket_path):
        return True
    try:
        bound = sock.getsockname()
        if not isinstance(bound, str) or not bound:
            return False  # abstract or unnamed
        ours, theirs = os.stat(socket_path), os.stat(bound)
    except OSError:
        return False
    return (ours.st_dev, ours.st_ino) == (theirs.st_dev, theirs.st_ino)


def _adopt_activated(socket_path: Path) -> socket.socket | None:
    """The listening socket the service manager passed for ``socket_path``, if any.

    The other passed descriptors are left open and the ``LISTEN_*`` variables in place: they belong to
    the daemon (an HTTP port, say), which may adopt them itself.
    """
    passed = systemd.listen_fds(unset_environment=False)
    chosen: socket.socket | None = None
    for sock in passed:
        if chosen is None and _names_same_socket(sock, socket_path):
            chosen = sock
        else:
            sock.detach()  # not ours to close: leave the descriptor as it was passed
    if chosen is None and passed:
        logger.debug("none of the %d passed descriptors is bound to %s; binding it", len(passed), socket_path)
    return chosen


def _remove_bind_debris(temporary: Path) -> None:
    # We hold the socket's lock, and only its holder ever binds this name: a socket of ours found here is
    # what a crash between bind() and link() left behind. Anything else is not ours and stops the start.
    try:
        st = os.lstat(temporary)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode) or st.st_uid != os.geteuid():
        raise ServerError(f"{temporary} is in the way of binding and is not our socket; not touching it")
    logger.warning("removing %s, left by a crash between bind and link", temporary)
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()


def _bind(
    socket_path: Path, mode: int, gid: int | None, backlog: int
) -> tuple[socket.socket, tuple[int, int]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
    try:
        # The mode is set on the socket before bind(), so the file is created with it
        # (no umask window, no process-wide umask change a threaded daemon must not make).
        os.fchmod(sock.fileno(), mode)
        temporary = bind_path_for(socket_path)
        if len(os.fsencode(temporary)) > MAX_SOCKET_PATH:
            temporary = socket_path  # no room for a temporary name: bind in place (the mode is still right)
        else:
            _remove_bind_debris(temporary)
        sock.bind(os.fsencode(temporary))
        try:
            # bind() still applies the umask to the fchmod'ed mode (unix_bind: i_mode & ~umask), so the
            # file is never looser than asked but may be tighter (0660 under umask 022 gives 0640). Set
            # the exact bits now, before the real path names the socket.
            os.chmod(temporary, mode)
            if gid is not None:
                os.chown(temporary, -1, gid, follow_symlinks=False)
            sock.listen(backlog)
            if temporary != socket_path:
                # Bound, listening and with its final owner and mode before the path names it, so a client
                # never meets a half-ready socket (HAProxy does this). link() rather than rename(): it fails
                # if something appeared at the path meanwhile instead of silently replacing it.
                try:
                    os.link(temporary, socket_path)
                except FileExistsError:
                    raise ServerError(
                        f"{socket_path} appeared while we were binding; not replacing it"
                    ) from None
                finally:
                    with contextlib.suppress(FileNotFoundError):
                        temporary.unlink()
            st = os.lstat(socket_path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                if temporary != socket_path:
                    temporary.unlink()
            raise
    except BaseException:
        sock.close()
        raise
    return sock, (st.st_dev, st.st_ino)


def open_endpoint(
    socket_path: Path,
    *,
    program: str | None,
    mode: int,
    group: str | int | None,
    backlog: int,
    socket_activation: bool,
) -> Endpoint:
    """Take the lock, recover, bind (or adopt systemd's socket) and listen.

    Raises:
        LockHeldError: another process holds the lock (the message names it).
        UnsafePathError: the directory is writable by others without the sticky bit, or the lock path is
            a symlink.
        SocketPathTooLongError: the path does not fit ``sun_path``.
        ServerError: the path is occupied by something recovery may not remove, or binding failed.
    """
    socket_path = Path(socket_path)
    SocketPathTooLongError.check(socket_path)
    gid = None if group is None else _resolve_group(group)
    _create_directory(socket_path.parent, gid)
    # In a directory others can write (without the sticky bit) another user could
    # swap our socket or lock file between our checks; refuse before touching anything.
    check_directory_safe(socket_path.parent)
    lock = take_lock(socket_path, program=program)
    try:
        if socket_activation:
            adopted = _adopt_activated(socket_path)
            if adopted is not None:
                adopted.setblocking(False)
                logger.info("adopted the listening socket passed by the service manager for %s", socket_path)
                return Endpoint(adopted, socket_path, lock, activated=True, inode=None)
        for action in remove_orphans(lock):
            if action.done:
                logger.info("%s %s: %s", action.what, action.path, action.reason)
            elif action.what == "refused":
                raise ServerError(f"cannot serve on {socket_path}: {action.reason}")
        if os.path.lexists(socket_path):
            raise ServerError(f"cannot serve on {socket_path}: the path exists and is not an orphaned socket")
        try:
            sock, inode = _bind(socket_path, mode, gid, backlog)
        except OSError as error:
            raise ServerError(f"cannot bind {socket_path}: {error.strerror or error}") from error
        return Endpoint(
            sock, socket_path, lock, activated=False, inode=inode, mode=mode, gid=gid, backlog=backlog
        )
    except BaseException:
        lock.release(clear_record=True)
        raise
