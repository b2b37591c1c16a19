"""``serve``'s HTTP configuration: ``--http ADDR``, Kea 3's ``control-sockets`` and the exposure refusal.

The parsing is pure and tested as tables plus Hypothesis (any input: a result or a clear error, never
another exception); user and password files are real files; ``ctrlsock serve`` is a real process.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ctrlsock.errors import ServerError
from ctrlsock.server.http_config import HttpListenerConfig, TlsConfig, User
from ctrlsock.server.kea_config import listeners_from_document, parse_http_address
from tests.children.cli_support import cli_env, run_cli, serving
from tests.support import REPO_DIR

# --- --http ADDR -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8000", ("127.0.0.1", 8000)),
        ("0", ("127.0.0.1", 0)),
        ("65535", ("127.0.0.1", 65535)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("192.0.2.1:8004", ("192.0.2.1", 8004)),
        ("localhost:8000", ("localhost", 8000)),
        ("kea.example.:443", ("kea.example.", 443)),
        ("[::1]:8000", ("::1", 8000)),
        ("[2001:DB8::1]:1", ("2001:db8::1", 1)),
        ("[::]:0", ("::", 0)),
    ],
)
def test_an_address_is_a_port_a_host_and_port_or_a_bracketed_ipv6_one(
    text: str, expected: tuple[str, int]
) -> None:
    assert parse_http_address(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "an empty address"),
        ("  ", "an empty address"),
        ("65536", "out of range (0-65535"),
        ("127.0.0.1:99999", "out of range"),
        ("-1", "not a number"),
        ("+80", "not a number"),
        ("80 ", "not a number"),
        ("\u0661\u0662", "not a number"),  # Arabic-Indic digits: isdigit() says yes, a port they are not
        ("::1:8000", "needs brackets, as in [::1]:8000"),
        ("::1", "needs brackets"),
        ("[::1]", "has no port"),
        ("[::1]8000", "has no port"),
        ("[::1:8000", "does not close it"),
        ("[127.0.0.1]:80", "not an IPv6 address"),
        (":8000", "has no host"),
        ("host:", "has no port"),
        ("300.1.1.1:80", "not an IPv4 address"),
        ("bad_host:80", "neither an IP address nor a host name"),
        ("-host:80", "neither an IP address nor a host name"),
    ],
)
def test_a_bad_address_says_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_http_address(text)


@given(st.text(max_size=40))
def test_any_text_is_an_address_or_a_value_error(text: str) -> None:
    try:
        host, port = parse_http_address(text)
    except ValueError as error:
        assert str(error)
        assert "\n" not in str(error).replace(repr(text), "")
    else:
        assert 0 <= port <= 65535
        assert host


@given(st.integers(0, 65535), st.sampled_from(["127.0.0.1", "0.0.0.0", "::1", "2001:db8::5", "a.example"]))
def test_an_address_written_out_reads_back(port: int, host: str) -> None:
    written = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    assert parse_http_address(written) == (host, port)


# --- control-sockets --------------------------------------------------------------------------------


def sockets(*entries: Any) -> dict[str, Any]:
    return {"Dhcp4": {"control-sockets": list(entries)}}


def test_kea_3_defaults_give_a_loopback_listener_on_port_8000(work_dir: Path) -> None:
    [listener] = listeners_from_document(sockets({"socket-type": "http"}), base_dir=work_dir)
    assert (listener.host, listener.port, listener.users, listener.tls) == ("127.0.0.1", 8000, (), None)


def test_a_full_https_entry_as_kea_documents_it(work_dir: Path) -> None:
    (work_dir / "admin-password").write_text("1234\n")
    entry = {
        "socket-type": "https",
        "socket-address": "10.20.30.40",
        "socket-port": 8004,
        "http-headers": [{"name": "Strict-Transport-Security", "value": "max-age=31536000"}],
        "trust-anchor": "ca.pem",
        "cert-file": "/etc/kea/cert.pem",
        "key-file": "key.pem",
        "cert-required": False,
        "authentication": {
            "type": "basic",
            "realm": "kea-dhcpv4-server",
            "clients": [
                {"user": "admin", "password-file": "admin-password"},
                {"user": "ro", "password": "x"},
            ],
        },
        "user-context": {"note": "kept for hooks"},
        "comment": "kept for config-get",
    }
    [listener] = listeners_from_document(sockets(entry), base_dir=work_dir)
    assert (listener.host, listener.port) == ("10.20.30.40", 8004)
    assert listener.tls == TlsConfig(
        cert_file=Path("/etc/kea/cert.pem"),
        key_file=work_dir / "key.pem",  # relative names are next to the configuration
        trust_anchor=work_dir / "ca.pem",
        cert_required=False,
    )
    assert listener.users == (User("admin", "1234"), User("ro", "x"))
    assert listener.realm == "kea-dhcpv4-server"
    assert listener.headers == (("Strict-Transport-Security", "max-age=31536000"),)
    assert listener.exposure_problem is None  # TLS and users: fine on any address


def test_control_sockets_at_the_top_level_and_unix_entries_left_to_the_command_line(work_dir: Path) -> None:
    document = {
        "control-sockets": [
            {"socket-type": "unix", "socket-name": "kea4-ctrl-socket"},
            {"socket-type": "http", "socket-address": "::1", "socket-port": 0},
            {"socket-type": "http", "socket-port": 0},
        ],
        "control-socket": {"socket-type": "unix", "socket-name": "old"},
    }
    listeners = listeners_from_document(document, base_dir=work_dir)
    assert [(listener.host, listener.port) for listener in listeners] == [("::1", 0), ("127.0.0.1", 0)]


@pytest.mark.parametrize(
    "document",
    [{}, {"Dhcp4": {}}, {"Dhcp4": {"control-socket": {"socket-name": "x"}}}, {"Logging": [], "Dhcp6": 3}],
)
def test_no_http_entry_no_listener(document: Any, work_dir: Path) -> None:
    assert listeners_from_document(document, base_dir=work_dir) == []


def test_defaults_carry_what_an_entry_cannot_say(work_dir: Path) -> None:
    defaults = HttpListenerConfig(allow_insecure=True, request_timeout=2.0, idle_timeout=3.0)
    entry = {"socket-type": "http", "socket-address": "0.0.0.0"}
    [listener] = listeners_from_document(sockets(entry), base_dir=work_dir, defaults=defaults)
    assert (listener.allow_insecure, listener.request_timeout, listener.idle_timeout) == (True, 2.0, 3.0)
    assert listener.host == "0.0.0.0"


def test_an_exposed_entry_is_parsed_and_then_refused_by_its_check(work_dir: Path) -> None:
    [listener] = listeners_from_document(
        sockets({"socket-type": "http", "socket-address": "0.0.0.0"}), base_dir=work_dir
    )
    with pytest.raises(ServerError, match=r"refusing to serve http on 0\.0\.0\.0:8000: .*no TLS"):
        listener.check()


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "the configuration: must be a map, not a list"),
        ({"control-sockets": {}}, "control-sockets: must be a list, not a map"),
        (sockets(3), "Dhcp4.control-sockets[0]: must be a map, not an integer"),
        (sockets({}), "Dhcp4.control-sockets[0]: 'socket-type' is mandatory"),
        (sockets({"socket-type": 1}), "control-sockets[0].socket-type: must be a string, not an integer"),
        (sockets({"socket-type": "tcp"}), "control-sockets[0].socket-type: unsupported 'tcp'"),
        (sockets({"socket-type": "http", "socket-name": "x"}), "control-sockets[0].socket-name: is for unix"),
        (sockets({"socket-type": "http", "bogus": 1}), "control-sockets[0].bogus: unknown key"),
        (
            sockets({"socket-type": "unix"}, {"socket-type": "http", "socket-port": 70000}),
            "Dhcp4.control-sockets[1].socket-port: out of range value 70000 (0-65535)",
        ),
        (
            sockets({"socket-type": "http", "socket-port": "80"}),
            "socket-port: must be an integer, not a string",
        ),
        (sockets({"socket-type": "http", "socket-port": 8.0}), "socket-port: must be an integer, not a real"),
        (
            sockets({"socket-type": "http", "socket-port": True}),
            "socket-port: must be an integer, not a boolean",
        ),
        (
            sockets({"socket-type": "http", "socket-address": "localhost"}),
            "socket-address: 'localhost' is not an IPv4 or IPv6 address",
        ),
        (sockets({"socket-type": "https"}), "[0]: no TLS setup for an https control socket"),
        (sockets({"socket-type": "https", "cert-file": ""}), "no TLS setup for an https"),
        (sockets({"socket-type": "http", "cert-file": "c.pem"}), "[0]: key-file is missing or empty"),
        (sockets({"socket-type": "http", "key-file": "k.pem"}), "[0]: cert-file is missing or empty"),
        (sockets({"socket-type": "http", "trust-anchor": "ca.pem"}), "cert-file is missing or empty"),
        (
            sockets({"socket-type": "http", "cert-file": "c", "key-file": "k", "cert-required": 1}),
            "[0].cert-required: must be a boolean, not an integer",
        ),
        (
            sockets({"socket-type": "http", "cert-file": "c", "key-file": "a\0b"}),
            "[0].key-file: must be a file",
        ),
        (sockets({"socket-type": "http", "user-context": []}), "[0].user-context: must be a map"),
        (sockets({"socket-type": "http", "comment": {}}), "[0].comment: must be a string"),
        (sockets({"socket-type": "http", "authentication": []}), "[0].authentication: must be a map"),
        (sockets({"socket-type": "http", "authentication": {}}), "[0].authentication: 'type' is required"),
        (
            sockets({"socket-type": "http", "authentication": {"type": "digest"}}),
            "[0].authentication.type: only basic HTTP authentication is supported, not 'digest'",
        ),
        (
            sockets({"socket-type": "http", "authentication": {"type": "basic", "realm": 'a"b'}}),
            "authentication.realm: must be printable ASCII without quotes",
        ),
        (
            sockets({"socket-type": "http", "authentication": {"type": "basic", "users": []}}),
            "[0].authentication.users: unknown key",
        ),
        (
            sockets({"socket-type": "http", "authentication": {"type": "basic", "clients": {}}}),
            "authentication.clients: must be a list, not a map",
        ),
        (
            sockets({"socket-type": "http", "authentication": {"type": "basic", "clients": [{}]}}),
            "authentication.clients[0]: user (or user-file) is required",
        ),
        (
            sockets(
                {
                    "socket-type": "http",
                    "authentication": {"type": "basic", "clients": [{"user": "a", "password": "b", "pw": 1}]},
                }
            ),
            "authentication.clients[0].pw: unknown key",
        ),
        (
            sockets({"socket-type": "http", "authentication": {"type": "basic", "clients": [{"user": "a"}]}}),
            "clients[0]: the user 'a' has an empty password (Kea allows it; ctrlsock does not)",
        ),
        (
            sockets(
                {
                    "socket-type": "http",
                    "authentication": {"type": "basic", "clients": [{"user": "a:b", "password": "c"}]},
                }
            ),
            "clients[0]: the user 'a:b' must not contain a ':'",
        ),
        (
            sockets(
                {
                    "socket-type": "http",
                    "authentication": {"type": "basic", "clients": [{"user": 5, "password": "c"}]},
                }
            ),
            "clients[0].user: must be a string, not an integer",
        ),
        (
            sockets(
                {
                    "socket-type": "http",
                    "authentication": {
                        "type": "basic",
                        "clients": [{"user": "a", "password": "b", "password-file": "f"}],
                    },
                }
            ),
            "clients[0]: password and password-file are mutually exclusive",
        ),
        (
            sockets(
                {
                    "socket-type": "http",
                    "authentication": {
                        "type": "basic",
                        "clients": [{"user": "a", "user-file": "u", "password": "b"}],
                    },
                }
            ),
            "clients[0]: user and user-file are mutually exclusive",
        ),
        (
            sockets(
                {
                    "socket-type": "http",
                    "authentication": {
                        "type": "basic",
                        "clients": [{"user": "a", "password": "b"}, {"user": "a", "password": "c"}],
                    },
                }
            ),
            "authentication.clients[1]: the user 'a' is already listed",
        ),
        (sockets({"socket-type": "http", "http-headers": {}}), "[0].http-headers: must be a list"),
        (
            sockets({"socket-type": "http", "http-headers": [{"name": "X"}]}),
            "http-headers[0]: 'value' is required",
        ),
        (
            sockets({"socket-type": "http", "http-headers": [{"name": "X Y", "value": "1"}]}),
            "http-headers[0].name: 'X Y' is not an HTTP header name",
        ),
        (
            sockets({"socket-type": "http", "http-headers": [{"name": "Content-Length", "value": "1"}]}),
            "http-headers[0].name: 'Content-Length' is set by the server itself",
        ),
        (
            sockets({"socket-type": "http", "http-headers": [{"name": "X", "value": "a\r\nSet-Cookie: x"}]}),
            "http-headers[0].value: must be visible ASCII",
        ),
        (
            sockets({"socket-type": "http", "http-headers": [{"name": "X", "value": ""}]}),
            "http-headers[0].value: must be visible ASCII, not empty",
        ),
        (
            sockets(
                {"socket-type": "http", "socket-port": 8001},
                {"socket-type": "https", "socket-port": 8001, "cert-file": "c", "key-file": "k"},
            ),
            "control-sockets[1]: 127.0.0.1:8001 is already the address of Dhcp4.control-sockets[0]",
        ),
        (
            {"Dhcp4": {"control-sockets": []}, "Dhcp6": {"control-sockets": []}},
            "'Dhcp4' and 'Dhcp6' both have control sockets",
        ),
        ({"control-socket": []}, "control-socket: must be a map"),
        (
            {"control-socket": {"socket-type": "http"}},
            "control-socket.socket-type: 'control-socket' is a unix",
        ),
    ],
)
def test_a_bad_entry_is_refused_naming_where_and_what(document: Any, message: str, work_dir: Path) -> None:
    with pytest.raises(ServerError) as caught:
        listeners_from_document(document, base_dir=work_dir)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


# --- user and password files ------------------------------------------------------------------------


def client_document(client: dict[str, Any], **authentication: Any) -> dict[str, Any]:
    return sockets(
        {"socket-type": "http", "authentication": {"type": "basic", **authentication, "clients": [client]}}
    )


def users_of(document: dict[str, Any], base_dir: Path) -> tuple[User, ...]:
    [listener] = listeners_from_document(document, base_dir=base_dir)
    return tuple(listener.users)


def test_password_and_user_files_give_their_first_line(work_dir: Path) -> None:
    (work_dir / "pw").write_text("s3cret with spaces\nsecond line is ignored\n")
    (work_dir / "user").write_text("admin\n")
    assert users_of(client_document({"user": "a", "password-file": "pw"}), work_dir) == (
        User("a", "s3cret with spaces"),
    )
    assert users_of(client_document({"user-file": "user", "password": "x"}), work_dir) == (
        User("admin", "x"),
    )
    absolute = str(work_dir / "pw")
    assert users_of(client_document({"user": "a", "password-file": absolute}), work_dir)[0].password == (
        "s3cret with spaces"
    )


def test_a_password_file_alone_holds_user_and_password(work_dir: Path) -> None:
    (work_dir / "secret").write_text("admin:pass:with:colons\n")
    assert users_of(client_document({"password-file": "secret"}), work_dir) == (
        User("admin", "pass:with:colons"),
    )
    (work_dir / "no-user").write_text("just-a-password\n")
    with pytest.raises(ServerError, match=r"clients\[0\]\.password-file: holds no 'user:' part"):
        users_of(client_document({"password-file": "no-user"}), work_dir)


def test_files_are_under_the_authentication_directory_as_kea_joins_them(work_dir: Path) -> None:
    (work_dir / "creds").mkdir()
    (work_dir / "creds" / "pw").write_text("inside\n")
    (work_dir / "pw").write_text("outside\n")
    # A relative directory is next to the configuration.
    assert users_of(client_document({"user": "a", "password-file": "pw"}, directory="creds"), work_dir) == (
        User("a", "inside"),
    )
    # Kea joins directory and name as text: "/pw" is still under the directory.
    document = client_document({"user": "a", "password-file": "/pw"}, directory=str(work_dir / "creds"))
    assert users_of(document, work_dir) == (User("a", "inside"),)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "has an empty first line"),
        (b"\nsecret\n", "has an empty first line"),
        (b"\xff\xfe", "is not UTF-8 text"),
    ],
)
def test_an_unusable_password_file_is_refused_naming_it(content: bytes, message: str, work_dir: Path) -> None:
    (work_dir / "pw").write_bytes(content)
    with pytest.raises(ServerError) as caught:
        users_of(client_document({"user": "a", "password-file": "pw"}), work_dir)
    assert str(caught.value) == (
        f"Dhcp4.control-sockets[0].authentication.clients[0].password-file: {work_dir / 'pw'} {message}"
    )


def test_a_missing_or_unreadable_file_is_refused_naming_it(work_dir: Path) -> None:
    with pytest.raises(
        ServerError, match=re.escape(f"user-file: cannot read {work_dir / 'nope'}: No such file")
    ):
        users_of(client_document({"user-file": "nope", "password": "x"}), work_dir)
    (work_dir / "dir").mkdir()
    with pytest.raises(ServerError, match=re.escape(f"password-file: cannot read {work_dir / 'dir'}: Is a")):
        users_of(client_document({"user": "a", "password-file": "dir"}), work_dir)


def test_a_user_file_with_a_colon_is_refused(work_dir: Path) -> None:
    (work_dir / "user").write_text("ad:min\n")
    with pytest.raises(ServerError, match="must not contain a ':'"):
        users_of(client_document({"user-file": "user", "password": "x"}), work_dir)


# --- any JSON: listeners or a ServerError ---------------------------------------------------------

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["http", "https", "unix", "basic", "pw", "user", "secret", "/pw", "", "::1", "a\0b"])
    | st.text(max_size=12)
)
JSON = st.recursive(
    _SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=16,
)
_KEYS = [
    "socket-type", "socket-address", "socket-port", "socket-name", "authentication", "trust-anchor",
    "cert-file", "key-file", "cert-required", "http-headers", "user-context", "comment", "bogus",
    "type", "realm", "directory", "clients", "user", "user-file", "password", "password-file",
    "name", "value",
]  # fmt: skip
KEA_MAPS = st.recursive(
    st.dictionaries(st.sampled_from(_KEYS), _SCALARS, max_size=6),
    lambda children: st.dictionaries(
        st.sampled_from(_KEYS), children | st.lists(children, max_size=3) | _SCALARS, max_size=6
    ),
    max_leaves=24,
)
DOCUMENTS = (
    JSON
    | st.builds(lambda entries: {"control-sockets": entries}, st.lists(KEA_MAPS | JSON, max_size=4))
    | st.builds(lambda entries: {"Dhcp4": {"control-sockets": entries}}, st.lists(KEA_MAPS, max_size=4))
    | st.builds(lambda entry: {"control-socket": entry}, KEA_MAPS | JSON)
)


@pytest.fixture(scope="module")
def files_dir() -> Iterator[Path]:
    """Files the generated documents may name: a password, a user, a user:password secret."""
    path = Path(tempfile.mkdtemp(prefix="cs-h", dir="/tmp"))
    (path / "pw").write_text("password\n")
    (path / "user").write_text("someone\n")
    (path / "secret").write_text("admin:1234\n")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@given(document=DOCUMENTS)
def test_any_json_gives_listeners_or_a_server_error(document: Any, files_dir: Path) -> None:
    try:
        listeners = listeners_from_document(document, base_dir=files_dir)
    except ServerError as error:
        assert str(error)
        assert "\n" not in str(error) or "\n" in json.dumps(document, ensure_ascii=False)
    else:
        for listener in listeners:
            assert isinstance(listener, HttpListenerConfig)
            assert 0 <= listener.port <= 65535
            assert all(user.user and user.password and ":" not in user.user for user in listener.users)


# --- ctrlsock serve --------------------------------------------------------------------------------


def one_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("ctrlsock: "), stderr
    return lines[0]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def binds_of(sock_path: Path, *options: object) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """``ctrlsock serve`` under strace: its result and every bind() it made (none may be missed)."""
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("needs strace to see that nothing was bound")
    trace = sock_path.parent / "trace"
    done = subprocess.run(
        [strace, "-f", "-qq", "-e", "trace=bind", "-o", str(trace), sys.executable, "-m", "ctrlsock", "serve",
         str(sock_path), *(str(option) for option in options)],
        capture_output=True, text=True, timeout=60, env=cli_env(), cwd=REPO_DIR, check=False,
    )  # fmt: skip
    binds = [line for line in trace.read_text().splitlines() if "bind(" in line]
    trace.unlink()
    return done, binds


def assert_nothing_left(sock_path: Path) -> None:
    assert sorted(path.name for path in sock_path.parent.iterdir()) == []


def test_serve_refuses_an_exposed_listener_binding_nothing(sock_path: Path) -> None:
    done, binds = binds_of(sock_path, "--http", "0.0.0.0:0")
    assert done.returncode == 74, done.stderr
    line = one_line(done.stderr)
    assert line.startswith("ctrlsock: refusing to serve http on 0.0.0.0:0: "), line
    assert "--http-allow-insecure" in line
    assert binds == []
    assert_nothing_left(sock_path)


def test_serve_refuses_an_exposed_listener_of_its_configuration(sock_path: Path) -> None:
    config = sock_path.parent / "kea.json"
    config.write_text(json.dumps(sockets({"socket-type": "http", "socket-address": "::", "socket-port": 0})))
    done, binds = binds_of(sock_path, "--config", config)
    assert done.returncode == 74, done.stderr
    assert "refusing to serve http on :::0" in one_line(done.stderr)
    assert binds == []
    assert sorted(path.name for path in sock_path.parent.iterdir()) == ["kea.json"]


def test_serve_refuses_a_bad_configuration_entry_naming_file_and_entry(sock_path: Path) -> None:
    config = sock_path.parent / "kea.json"
    config.write_text(
        json.dumps(sockets({"socket-type": "unix"}, {"socket-type": "http", "socket-port": -1}))
    )
    done = run_cli("serve", sock_path, "--config", config)
    assert done.returncode == 74
    assert one_line(done.stderr) == (
        f"ctrlsock: {config}: Dhcp4.control-sockets[1].socket-port: out of range value -1 (0-65535)"
    )
    assert not sock_path.exists()
    assert not sock_path.with_name("ctrl.sock.lock").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--http", "[::1"], "--http [::1: '[::1' opens a bracket and does not close it"),
        (["--http", "::1:80"], "--http ::1:80: an IPv6 address needs brackets, as in [::1]:80"),
        (["--http", "65536"], "--http 65536: the port 65536"),
        (["--http", "8000", "--http", "127.0.0.1:8000"], "--http 127.0.0.1:8000: given twice"),
        (["--http-cert", "c.pem", "--http-key", "k.pem"], "--http-cert, --http-key: only with --http ADDR"),
        (["--http", "0", "--http-cert", "c.pem"], "--http-cert and --http-key go together"),
        (["--http", "0", "--http-key", "k.pem"], "--http-cert and --http-key go together"),
        (["--http", "0", "--http-ca", "ca.pem"], "--http-ca needs --http-cert and --http-key"),
        (["--http", "0", "--http-auth-user", "admin"], "--http-auth-user and --http-auth-password-file go"),
        (
            ["--http", "0", "--http-auth-password-file", "pw"],
            "--http-auth-user and --http-auth-password-file",
        ),
        (["--http", "0", "--no-http-cert-required"], "--no-http-cert-required need --http-ca"),
        (["--http", "0", "--http-idle-timeout", "0"], "'--http-idle-timeout': must be a positive number"),
        (["--http", "0", "--http-allow-insecure", "yes"], "--http-allow-insecure takes no value"),
    ],
)
def test_serve_usage_errors_are_one_line_and_64(options: list[str], message: str, sock_path: Path) -> None:
    done = run_cli("serve", sock_path, *options)
    assert done.returncode == 64, done.stderr
    assert message in one_line(done.stderr)
    assert_nothing_left(sock_path)


def test_serve_refuses_an_unreadable_password_file_naming_it(sock_path: Path) -> None:
    missing = sock_path.parent / "missing"
    done = run_cli(
        "serve", sock_path, "--http", "0", "--http-auth-user", "a", "--http-auth-password-file", missing
    )
    assert done.returncode == 74
    assert one_line(done.stderr) == (
        f"ctrlsock: --http-auth-password-file: cannot read password file {missing}: No such file or directory"
    )
    assert_nothing_left(sock_path)


def serving_urls(log: Any, count: int) -> list[str]:
    """The ``serving http(s)://...`` URLs of a started serve's log, once it wrote ``count`` of them."""
    deadline = time.monotonic() + 20
    while True:
        urls = re.findall(r"serving (https?://\S+) for ", log())
        if len(urls) >= count or time.monotonic() > deadline:
            return urls
        time.sleep(0.02)  # the log is a file: nothing to wait on but its growth


def test_serve_answers_on_an_allowed_exposed_listener(sock_path: Path) -> None:
    with serving(sock_path, "--http", "0.0.0.0:0", "--http-allow-insecure") as server:
        [url] = serving_urls(server.log, 1)
        port = int(re.fullmatch(r"http://0\.0\.0\.0:(\d+)/", url).group(1))  # type: ignore[union-attr]
        assert port != 0
        done = run_cli("send", f"http://127.0.0.1:{port}/", "version-get", "--timeout", "5")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["result"] == 0


def test_serve_opens_the_listeners_of_its_configuration_with_their_users(sock_path: Path) -> None:
    (sock_path.parent / "admin-password").write_text("s3cret\n")
    config = sock_path.parent / "kea.json"
    port = free_port()
    client = {"user": "admin", "password-file": "admin-password"}
    entry = {
        "socket-type": "http",
        "socket-port": port,
        "authentication": {"type": "basic", "realm": "test", "clients": [client]},
        "http-headers": [{"name": "Strict-Transport-Security", "value": "max-age=31536000"}],
    }
    config.write_text(json.dumps(sockets(entry)))
    with serving(sock_path, "--config", config, "--http", "[::1]:0") as server:
        urls = serving_urls(server.log, 2)
        assert f"http://127.0.0.1:{port}/" in urls
        assert any(url.startswith("http://[::1]:") for url in urls)
        url = f"http://127.0.0.1:{port}/"
        refused = run_cli("send", url, "version-get", "--timeout", "5")
        assert refused.returncode == 85, refused.stderr
        assert "realm 'test'" in refused.stderr
        # The entry's http-headers come with every answer.
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            connection.request(
                "POST", "/", b'{"command": "version-get"}', {"Content-Type": "application/json"}
            )
            response = connection.getresponse()
            assert response.status == 401
            assert response.getheader("Strict-Transport-Security") == "max-age=31536000"
        finally:
            connection.close()
        allowed = run_cli(
            "send", url, "version-get", "--timeout", "5",
            "--auth-user", "admin", "--auth-password-file", sock_path.parent / "admin-password",
        )  # fmt: skip
        assert allowed.returncode == 0, allowed.stderr


def openssl(*args: object) -> None:
    subprocess.run(["openssl", *(str(arg) for arg in args)], check=True, capture_output=True, timeout=30)


def certificate(directory: Path, name: str, ca: tuple[Path, Path], extensions: str) -> tuple[Path, Path]:
    key, request, cert = directory / f"{name}.key", directory / f"{name}.csr", directory / f"{name}.pem"
    (directory / f"{name}.ext").write_text(extensions + "\n")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", key, "-out", request, "-subj", f"/CN={name}")  # fmt: skip
    openssl("x509", "-req", "-in", request, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
            "-out", cert, "-days", "2", "-extfile", directory / f"{name}.ext")  # fmt: skip
    return cert, key


def test_serve_https_with_client_certificates_and_a_user_from_the_command_line(sock_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command is missing (.ci/run installs it)")
    pki = sock_path.parent
    ca = pki / "ca.pem", pki / "ca.key"
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", ca[1], "-out", ca[0], "-days", "2", "-subj", "/CN=ctrlsock test CA")  # fmt: skip
    server_cert, server_key = certificate(pki, "server", ca, "subjectAltName=IP:127.0.0.1")
    client_cert, client_key = certificate(pki, "client", ca, "extendedKeyUsage=clientAuth")
    password = pki / "password"
    password.write_text("s3cret\n")
    with serving(
        sock_path, "--http", "127.0.0.1:0", "--http-cert", server_cert, "--http-key", server_key,
        "--http-ca", ca[0], "--http-auth-user", "admin", "--http-auth-password-file", password,
    ) as server:  # fmt: skip
        [url] = serving_urls(server.log, 1)
        assert url.startswith("https://127.0.0.1:")
        auth = ("--auth-user", "admin", "--auth-password-file", password)
        done = run_cli("send", url, "version-get", "--timeout", "5", "--ca", ca[0],
                       "--cert", client_cert, "--key", client_key, *auth)  # fmt: skip
        assert done.returncode == 0, done.stderr
        without_certificate = run_cli("send", url, "version-get", "--timeout", "5", "--ca", ca[0], *auth)
        assert without_certificate.returncode == 86, without_certificate.stderr
        without_user = run_cli("send", url, "version-get", "--timeout", "5", "--ca", ca[0],
                               "--cert", client_cert, "--key", client_key)  # fmt: skip
        assert without_user.returncode == 85, without_user.stderr


def test_the_readme_example_configuration_gives_the_listener_it_describes(work_dir: Path) -> None:
    readme = (REPO_DIR / "README.md").read_text()
    [example] = re.findall(r"```json\n(.*?)```", readme, flags=re.DOTALL)
    (work_dir / "admin-password").write_text("s3cret\n")
    document = json.loads(example.replace("/etc/mydaemon/credentials", str(work_dir)))
    [listener] = listeners_from_document(document, base_dir=work_dir)
    assert (listener.host, listener.port, listener.realm) == ("192.0.2.1", 8004, "mydaemon")
    assert listener.users == (User("admin", "s3cret"),)
    assert listener.tls == TlsConfig(work_dir / "cert.pem", work_dir / "key.pem", work_dir / "ca.pem", True)
    assert listener.exposure_problem is None
