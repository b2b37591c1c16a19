from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from ctrlsock import errors


@pytest.mark.parametrize(
    "error",
    [
        errors.LockHeldError(Path("/run/x/ctrl.sock.lock"), ("pid 4242 (mydaemon, running)",)),
        errors.SocketNotFoundError("no socket at /x", path=Path("/x")),
        errors.TruncatedReplyError("reply cut after 10 bytes", path=Path("/x"), received=10),
        errors.RemoteProtocolError("invalid first character x"),
        errors.UnsafePathError(Path("/tmp/x"), "is a symlink"),
        errors.SocketPathTooLongError(Path("/" + "a" * 200)),
        errors.CommandError("no such lease", result=3, arguments={"a": 1}),
        errors.RecoveryError("refused", reasons=("a", "b")),
    ],
)
def test_errors_pickle_with_their_attributes(error: errors.CtrlSockError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.__dict__ == error.__dict__


def test_lock_held_error_keeps_keas_phrase_and_names_holder() -> None:
    error = errors.LockHeldError(Path("/run/x/ctrl.sock.lock"), ("pid 4242 (mydaemon)",))
    assert str(error) == "cannot lock socket lockfile, /run/x/ctrl.sock.lock: held by pid 4242 (mydaemon)"
    assert isinstance(error, BlockingIOError)


def test_client_errors_are_the_builtins_callers_catch() -> None:
    assert isinstance(errors.SocketNotFoundError("x"), FileNotFoundError)
    assert isinstance(errors.ServerRefusedError("x"), ConnectionRefusedError)
    assert isinstance(errors.ClientTimeoutError("x"), TimeoutError)
    assert isinstance(errors.SocketPermissionError("x"), PermissionError)
    assert isinstance(errors.TruncatedReplyError("x"), ConnectionError)


def test_socket_path_too_long_names_size_and_limit() -> None:
    error = errors.SocketPathTooLongError(Path("/" + "a" * 120))
    assert "121 bytes" in str(error)
    assert "107" in str(error)


def test_socket_path_check_admits_107_bytes_and_refuses_108() -> None:
    errors.SocketPathTooLongError.check(Path("/" + "a" * 106))
    with pytest.raises(errors.SocketPathTooLongError) as caught:
        errors.SocketPathTooLongError.check(Path("/" + "a" * 107))
    assert caught.value.limit == errors.MAX_SOCKET_PATH == 107
