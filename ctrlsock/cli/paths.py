"""Default socket paths, and the SOCKET / PATH arguments resolved against them."""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from ctrlsock.errors import SocketPathTooLongError, UnsafePathError
from ctrlsock.names import LOCK_SUFFIX

__all__ = [
    "DEFAULT_SOCKET_NAME",
    "PROG",
    "URL_PREFIXES",
    "default_socket_path",
    "is_url",
    "path_arguments",
    "socket_argument",
]

PROG: Final = "ctrlsock"
DEFAULT_SOCKET_NAME: Final = "ctrlsock.sock"
#: A SOCKET or PATH argument starting with one of these is an HTTP(S) control endpoint, not a file.
URL_PREFIXES: Final = ("http://", "https://")


def is_url(argument: str | os.PathLike[str]) -> bool:
    """Whether a SOCKET/PATH argument names an HTTP(S) endpoint (``./http:`` stays a path)."""
    return isinstance(argument, str) and argument.lower().startswith(URL_PREFIXES)


def default_socket_path(*, create: bool = False) -> Path:
    """The socket a left-out SOCKET/PATH argument means.

    ``$XDG_RUNTIME_DIR/ctrlsock/ctrlsock.sock``, else ``/run/ctrlsock/ctrlsock.sock`` for root, else
    ``/tmp/ctrlsock-$UID/ctrlsock.sock``. With ``create`` (``serve``) the directory is made 0700 if
    missing. Either way an existing directory is checked: ours, not a symlink, not writable by others,
    and under the shared ``/tmp`` not accessible by others at all (anyone may create
    ``/tmp/ctrlsock-$UID`` first and wait for us to talk to their socket).

    Raises:
        UnsafePathError: the directory fails a check.
    """
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    private_only = False
    # The XDG base directory spec says a relative value is invalid and must be ignored.
    if runtime and os.path.isabs(runtime):
        directory = Path(runtime) / PROG
    elif os.geteuid() == 0:
        directory = Path("/run") / PROG
    else:
        directory = Path(f"/tmp/{PROG}-{os.getuid()}")
        private_only = True
    if create:
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            pass
        except OSError as error:
            raise UnsafePathError(
                directory, f"cannot create the socket directory: {error.strerror}"
            ) from None
    _check_socket_directory(directory, private_only=private_only)
    return directory / DEFAULT_SOCKET_NAME


def _check_socket_directory(directory: Path, *, private_only: bool) -> None:
    try:
        info = directory.lstat()
    except FileNotFoundError:
        return
    except OSError as error:
        raise UnsafePathError(directory, f"cannot check the socket directory: {error.strerror}") from None
    if stat.S_ISLNK(info.st_mode):
        raise UnsafePathError(
            directory, "the socket directory is a symlink; remove it or set XDG_RUNTIME_DIR"
        )
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafePathError(directory, "is not a directory; remove it or set XDG_RUNTIME_DIR")
    if info.st_uid != os.geteuid():
        raise UnsafePathError(
            directory,
            f"the socket directory belongs to uid {info.st_uid}, not to you (uid {os.geteuid()}); "
            "remove it or set XDG_RUNTIME_DIR",
        )
    mode = stat.S_IMODE(info.st_mode)
    forbidden = 0o077 if private_only else 0o022
    if mode & forbidden:
        expected = "0700" if private_only else "not writable by group or others"
        raise UnsafePathError(
            directory, f"the socket directory has mode {mode:04o}, expected {expected}; chmod it"
        )


def socket_argument(path: Path | None, *, create: bool = False) -> Path:
    """A SOCKET argument resolved (the default when left out) and checked to fit ``sun_path``."""
    resolved = default_socket_path(create=create) if path is None else path
    SocketPathTooLongError.check(resolved)
    return resolved


def path_arguments(paths: Sequence[Path] | None) -> list[Path]:
    """PATH... arguments: the default socket when none; a socket path must fit ``sun_path``."""
    if not paths:
        return [default_socket_path()]
    for path in paths:
        try:
            info = path.stat()
        except OSError:
            info = None
        if info is not None and stat.S_ISDIR(info.st_mode):
            continue
        # A ``NAME.lock`` that is not itself a socket stands for the socket NAME (the probe's rule).
        is_socket = info is not None and stat.S_ISSOCK(info.st_mode)
        is_lock_name = path.name.endswith(LOCK_SUFFIX) and not is_socket
        SocketPathTooLongError.check(
            path.with_name(path.name.removesuffix(LOCK_SUFFIX)) if is_lock_name else path
        )
    return list(paths)
