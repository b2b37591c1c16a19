"""Kea 3's ``control-sockets`` read into :class:`HttpListenerConfig`, and the ``--http ADDR`` syntax.

Kea 3's DHCP servers serve their commands over HTTP themselves (Kea ChangeLog 2271); a configuration
names each listener in ``control-sockets``, at the top of its daemon's map::

    {"Dhcp4": {"control-sockets": [{"socket-type": "https", "socket-address": "10.0.0.1",
                                    "socket-port": 8004, "cert-file": "...", "key-file": "...",
                                    "authentication": {"type": "basic", "clients": [...]}}]}}

``ctrlsock serve --config FILE`` opens the ``http``/``https`` entries of such a file, with Kea's keys,
defaults and checks (Kea's ``HttpCommandConfig``, ``BasicHttpAuthConfig`` and ``parseCfgHttpHeaders``),
so that one configuration works for both. A ``unix`` entry is not a listener here: the socket is the
command line's SOCKET. Where ctrlsock differs from Kea, the code says so. Nothing is bound here; the
checks against exposure are :meth:`HttpListenerConfig.check`'s, run by the server. They differ from
Kea 3's, which refuses an entry with neither TLS nor authentication on any address, loopback included,
unless the daemon runs with ``-X``; ctrlsock allows loopback and wants both elsewhere.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from ctrlsock.errors import ServerError

from .http_config import DEFAULT_HTTP_HOST, DEFAULT_HTTP_PORT, HttpListenerConfig, TlsConfig, User

__all__ = ["listeners_from_document", "parse_http_address"]

_SOCKET_KEYS: Final = frozenset(
    {
        "socket-type",
        "socket-address",
        "socket-port",
        "authentication",
        "trust-anchor",
        "cert-file",
        "key-file",
        "cert-required",
        "http-headers",
        "user-context",
        "comment",
    }
)
_AUTHENTICATION_KEYS: Final = frozenset({"type", "realm", "directory", "clients", "user-context", "comment"})
_CLIENT_KEYS: Final = frozenset({"user", "user-file", "password", "password-file", "user-context", "comment"})
_HEADER_KEYS: Final = frozenset({"name", "value", "user-context", "comment"})
# Headers that frame or end the response: an extra one would corrupt the reply (Kea does not check).
_FRAMING_HEADERS: Final = frozenset(
    {"content-length", "transfer-encoding", "connection", "content-type", "keep-alive", "upgrade"}
)
_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 section 5.6.2
# Visible ASCII with inner spaces: no line break can end the header early, no encoding question arises.
_FIELD_VALUE: Final = re.compile(r"[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?")
_HOST_LABEL: Final = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")

_ADDRESS_FORMS: Final = "PORT, HOST:PORT or [IPV6]:PORT"


# --- --http ADDR -----------------------------------------------------------------------------------


def parse_http_address(text: str) -> tuple[str, int]:
    """``(host, port)`` from ``PORT``, ``HOST:PORT`` or ``[IPV6]:PORT``; a bare port binds 127.0.0.1.

    Raises:
        ValueError: not one of those forms (the message says what is wrong and what would do).
    """
    if not text.strip():
        raise ValueError(f"an empty address; give {_ADDRESS_FORMS}")
    if text.startswith("["):
        inside, bracket, after = text[1:].partition("]")
        if not bracket:
            raise ValueError(f"{text!r} opens a bracket and does not close it; give [IPV6]:PORT")
        try:
            host = str(ipaddress.IPv6Address(inside))
        except ValueError:
            raise ValueError(f"{inside!r} in brackets is not an IPv6 address") from None
        if not after.startswith(":"):
            raise ValueError(f"{text!r} has no port; give [{inside}]:PORT")
        return host, _port(after[1:], text)
    if ":" not in text:
        return DEFAULT_HTTP_HOST, _port(text, text)
    host, _, port = text.rpartition(":")
    if ":" in host:
        raise ValueError(f"an IPv6 address needs brackets, as in [{host}]:{port}")
    if not host:
        raise ValueError(f"{text!r} has no host before the colon; give {_ADDRESS_FORMS}")
    _check_host(host)
    return host, _port(port, text)


def _port(text: str, whole: str) -> int:
    if not text:
        raise ValueError(f"{whole!r} has no port; give {_ADDRESS_FORMS}")
    # isdigit() alone would take other scripts' digits, which int() then reads.
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"the port {text!r} in {whole!r} is not a number")
    port = int(text)
    if port > 65535:
        raise ValueError(f"the port {port} in {whole!r} is out of range (0-65535; 0 picks a free one)")
    return port


def _check_host(host: str) -> None:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        pass
    else:
        return
    labels = host.removesuffix(".").split(".")
    if all(label.isdigit() for label in labels):
        raise ValueError(f"{host!r} is not an IPv4 address")
    if len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"{host!r} is neither an IP address nor a host name")


# --- control-sockets --------------------------------------------------------------------------------


def _problem(where: str, problem: str) -> ServerError:
    """One line naming the place in the document (``Dhcp4.control-sockets[1].socket-port``) and the fault."""
    return ServerError(f"{where}: {problem}")


def listeners_from_document(
    document: Any, *, base_dir: Path, defaults: HttpListenerConfig | None = None
) -> list[HttpListenerConfig]:
    """The HTTP(S) listeners a Kea 3 style configuration's ``control-sockets`` describe.

    ``control-sockets`` is looked for at the top level, else in the top-level map that has it (Kea's
    ``{"Dhcp4": {...}}``). Entries of ``socket-type`` ``http`` and ``https`` become listeners; ``unix``
    entries and Kea's older singular ``control-socket`` (unix only) are left to the command line.

    Args:
        document: the parsed JSON configuration.
        base_dir: where relative file names point (the configuration file's directory).
        defaults: what the document cannot say (``allow_insecure``, the timeouts); its address, users,
            realm, TLS and headers are replaced by each entry's.

    Raises:
        ServerError: the document is not a map, or an entry is not valid; the message names the entry
            (``Dhcp4.control-sockets[1].socket-port``) and what is wrong with it.
    """
    template = defaults if defaults is not None else HttpListenerConfig()
    return _listeners(document, base_dir, template)


def _listeners(document: Any, base_dir: Path, template: HttpListenerConfig) -> list[HttpListenerConfig]:
    if not isinstance(document, dict):
        raise _problem("the configuration", f"must be a map, not {_json_type(document)}")
    section, prefix = _section(document)
    if section is None:
        return []
    singular = section.get("control-socket")
    if singular is not None:
        _check_singular(singular, f"{prefix}control-socket")
    entries = section.get("control-sockets")
    if entries is None:
        return []
    where = f"{prefix}control-sockets"
    if not isinstance(entries, list):
        raise _problem(where, f"must be a list, not {_json_type(entries)}")
    listeners: list[HttpListenerConfig] = []
    seen: dict[tuple[str, int], int] = {}
    for index, entry in enumerate(entries):
        listener = _entry(entry, f"{where}[{index}]", base_dir, template)
        if listener is None:
            continue
        address = (listener.host, listener.port)
        if listener.port != 0 and address in seen:
            raise _problem(
                f"{where}[{index}]",
                f"{_address_text(*address)} is already the address of {where}[{seen[address]}]",
            )
        seen.setdefault(address, index)
        listeners.append(listener)
    return listeners


def _section(document: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    if "control-sockets" in document or "control-socket" in document:
        return document, ""
    found = [
        (name, value)
        for name, value in document.items()
        if isinstance(value, dict) and ("control-sockets" in value or "control-socket" in value)
    ]
    if not found:
        return None, ""
    if len(found) > 1:
        names = " and ".join(repr(name) for name, _ in found)
        raise _problem("the configuration", f"{names} both have control sockets; give one daemon's map")
    name, value = found[0]
    return value, f"{name}."


def _check_singular(value: Any, where: str) -> None:
    # Kea before 2.7 had one unix "control-socket"; ctrlsock's socket is the command line's SOCKET.
    if not isinstance(value, dict):
        raise _problem(where, f"must be a map, not {_json_type(value)}")
    kind = value.get("socket-type", "unix")
    if kind != "unix":
        raise _problem(
            f"{where}.socket-type",
            f"'control-socket' is a unix socket only, not {kind!r}; list http ones in 'control-sockets'",
        )


def _entry(entry: Any, where: str, base_dir: Path, template: HttpListenerConfig) -> HttpListenerConfig | None:
    if not isinstance(entry, dict):
        raise _problem(where, f"must be a map, not {_json_type(entry)}")
    if "socket-type" not in entry:
        raise _problem(where, "'socket-type' is mandatory (unix, http or https)")
    kind = _string(entry, "socket-type", where)
    if kind == "unix":
        return None  # the socket ctrlsock serves is the command line's SOCKET
    if kind not in {"http", "https"}:
        raise _problem(f"{where}.socket-type", f"unsupported {kind!r}, not 'unix', 'http' or 'https'")
    if "socket-name" in entry:
        raise _problem(f"{where}.socket-name", f"is for unix sockets; an {kind} control socket has none")
    _known_keys(entry, _SOCKET_KEYS, where)
    _user_context(entry, where)
    host = DEFAULT_HTTP_HOST
    if "socket-address" in entry:
        text = _string(entry, "socket-address", where)
        try:
            # Kea takes an address only (no host name), and so does this.
            host = str(ipaddress.ip_address(text))
        except ValueError:
            raise _problem(f"{where}.socket-address", f"{text!r} is not an IPv4 or IPv6 address") from None
    port = DEFAULT_HTTP_PORT
    if "socket-port" in entry:
        port = _integer(entry, "socket-port", where)
        if not 0 <= port <= 65535:
            raise _problem(f"{where}.socket-port", f"out of range value {port} (0-65535)")
    tls = _tls(entry, where, base_dir, https=kind == "https")
    users: tuple[User, ...] = ()
    realm = template.realm
    if "authentication" in entry:
        users, realm = _authentication(entry["authentication"], f"{where}.authentication", base_dir, realm)
    headers = _headers(entry, where)
    try:
        return dataclasses.replace(
            template, host=host, port=port, users=users, realm=realm, tls=tls, headers=headers
        )
    except ValueError as error:
        raise _problem(where, str(error)) from None


def _tls(entry: dict[str, Any], where: str, base_dir: Path, *, https: bool) -> TlsConfig | None:
    # Kea treats an empty file name as a missing one.
    names = {
        key: _string(entry, key, where) for key in ("trust-anchor", "cert-file", "key-file") if key in entry
    }
    anchor, cert, key = (names.get(name) or None for name in ("trust-anchor", "cert-file", "key-file"))
    cert_required = _boolean(entry, "cert-required", where) if "cert-required" in entry else True
    if anchor is None and cert is None and key is None:
        if https:
            raise _problem(where, "no TLS setup for an https control socket: give cert-file and key-file")
        return None
    # Kea wants all three or none. ctrlsock also serves TLS without a trust-anchor: it then asks for no
    # client certificate, as --http-cert without --http-ca does.
    if cert is None:
        raise _problem(where, "cert-file is missing or empty: trust-anchor and key-file need it")
    if key is None:
        raise _problem(where, "key-file is missing or empty: cert-file needs it")
    return TlsConfig(
        cert_file=_path(cert, base_dir, f"{where}.cert-file"),
        key_file=_path(key, base_dir, f"{where}.key-file"),
        trust_anchor=None if anchor is None else _path(anchor, base_dir, f"{where}.trust-anchor"),
        cert_required=cert_required,
    )


def _authentication(value: Any, where: str, base_dir: Path, realm: str) -> tuple[tuple[User, ...], str]:
    if not isinstance(value, dict):
        raise _problem(where, f"must be a map, not {_json_type(value)}")
    _known_keys(value, _AUTHENTICATION_KEYS, where)
    _user_context(value, where)
    if "type" not in value:
        raise _problem(where, "'type' is required (basic)")
    kind = _string(value, "type", where)
    if kind != "basic":
        raise _problem(f"{where}.type", f"only basic HTTP authentication is supported, not {kind!r}")
    # Kea's default realm is empty (its documentation says kea-dhcpv4-server); ours is "ctrlsock".
    if "realm" in value:
        realm = _string(value, "realm", where)
        if not all(" " <= char <= "~" and char not in '"\\' for char in realm):
            raise _problem(f"{where}.realm", "must be printable ASCII without quotes or backslashes")
    directory = _string(value, "directory", where) if "directory" in value else None
    if "clients" not in value:
        return (), realm
    clients = value["clients"]
    if not isinstance(clients, list):
        raise _problem(f"{where}.clients", f"must be a list, not {_json_type(clients)}")
    users = tuple(
        _client(client, f"{where}.clients[{index}]", base_dir, directory)
        for index, client in enumerate(clients)
    )
    names = [user.user for user in users]
    for index, name in enumerate(names):
        if name in names[:index]:
            raise _problem(f"{where}.clients[{index}]", f"the user {name!r} is already listed")
    return users, realm


def _client(client: Any, where: str, base_dir: Path, directory: str | None) -> User:
    if not isinstance(client, dict):
        raise _problem(where, f"must be a map, not {_json_type(client)}")
    _known_keys(client, _CLIENT_KEYS, where)
    _user_context(client, where)
    for one, other in (("password", "password-file"), ("user", "user-file")):
        if one in client and other in client:
            raise _problem(where, f"{one} and {other} are mutually exclusive")
    for key in ("user", "user-file", "password", "password-file"):
        if key in client:
            _string(client, key, where)
    if "user" not in client and "user-file" not in client:
        if "password-file" not in client:
            raise _problem(where, "user (or user-file) is required")
        # Kea: a password-file alone holds "user:password".
        secret = _first_line(client["password-file"], base_dir, directory, f"{where}.password-file")
        user, colon, password = secret.partition(":")
        if not colon:
            raise _problem(f"{where}.password-file", "holds no 'user:' part (and no user is given)")
        return _user(user, password, where)
    if "user" in client:
        user = client["user"]
    else:
        user = _first_line(client["user-file"], base_dir, directory, f"{where}.user-file")
    if "password-file" in client:
        password = _first_line(client["password-file"], base_dir, directory, f"{where}.password-file")
    else:
        # Kea lets a password be left out (an empty one); ctrlsock refuses one that is missing or empty.
        password = client.get("password", "")
    return _user(user, password, where)


def _user(user: str, password: str, where: str) -> User:
    if not user:
        raise _problem(where, "the user must not be empty")
    if ":" in user:
        raise _problem(where, f"the user {user!r} must not contain a ':'")
    if not password:
        raise _problem(where, f"the user {user!r} has an empty password (Kea allows it; ctrlsock does not)")
    return User(user, password)


def _first_line(name: str, base_dir: Path, directory: str | None, where: str) -> str:
    """A user or password file's first line, without its line end.

    The rule of :func:`ctrlsock.http_client.read_password_file` and of Kea 3 (``getline``; earlier Kea
    versions read up to the first space).
    """
    if directory is not None:
        # Kea joins "directory/name" as text, so an absolute name still lands under the directory. A
        # relative directory is taken from the configuration's directory here, from Kea's cwd there.
        path = _path(directory, base_dir, where) / name.removeprefix("/")
    else:
        # Kea without a directory makes "/name" of it; here a relative name is next to the configuration.
        path = _path(name, base_dir, where)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise _problem(where, f"cannot read {path}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise _problem(where, f"{path} is not UTF-8 text") from None
    line = text.splitlines()[0] if text else ""
    if not line:
        raise _problem(where, f"{path} has an empty first line")
    return line


def _path(name: str, base_dir: Path, where: str) -> Path:
    if not name or "\0" in name:
        raise _problem(where, "must be a file name: not empty, without a NUL character")
    path = Path(name)
    return path if path.is_absolute() else base_dir / path


def _headers(entry: dict[str, Any], where: str) -> tuple[tuple[str, str], ...]:
    if "http-headers" not in entry:
        return ()
    items = entry["http-headers"]
    if not isinstance(items, list):
        raise _problem(f"{where}.http-headers", f"must be a list, not {_json_type(items)}")
    headers: list[tuple[str, str]] = []
    for index, item in enumerate(items):
        at = f"{where}.http-headers[{index}]"
        if not isinstance(item, dict):
            raise _problem(at, f"must be a map, not {_json_type(item)}")
        _known_keys(item, _HEADER_KEYS, at)
        _user_context(item, at)
        for key in ("name", "value"):
            if key not in item:
                raise _problem(at, f"'{key}' is required")
        name, value = _string(item, "name", at), _string(item, "value", at)
        # Kea only refuses empty ones; a header that breaks the response's framing is refused here too.
        if not _TOKEN.fullmatch(name):
            raise _problem(f"{at}.name", f"{name!r} is not an HTTP header name")
        if name.lower() in _FRAMING_HEADERS:
            raise _problem(f"{at}.name", f"{name!r} is set by the server itself")
        if not _FIELD_VALUE.fullmatch(value):
            raise _problem(f"{at}.value", "must be visible ASCII, not empty, without edge spaces")
        headers.append((name, value))
    return tuple(headers)


# --- one key of a map ------------------------------------------------------------------------------


def _known_keys(value: Mapping[str, Any], known: frozenset[str], where: str) -> None:
    for key in value:
        if key not in known:
            raise _problem(f"{where}.{key}", f"unknown key (known: {', '.join(sorted(known))})")


def _user_context(value: Mapping[str, Any], where: str) -> None:
    # Kea keeps these for hooks and config-get; they mean nothing to the listener.
    if "user-context" in value and not isinstance(value["user-context"], dict):
        raise _problem(f"{where}.user-context", f"must be a map, not {_json_type(value['user-context'])}")
    if "comment" in value:
        _string(value, "comment", where)


def _string(value: Mapping[str, Any], key: str, where: str) -> str:
    found = value[key]
    if not isinstance(found, str):
        raise _problem(f"{where}.{key}", f"must be a string, not {_json_type(found)}")
    return found


def _integer(value: Mapping[str, Any], key: str, where: str) -> int:
    found = value[key]
    if isinstance(found, bool) or not isinstance(found, int):
        raise _problem(f"{where}.{key}", f"must be an integer, not {_json_type(found)}")
    return found


def _boolean(value: Mapping[str, Any], key: str, where: str) -> bool:
    found = value[key]
    if not isinstance(found, bool):
        raise _problem(f"{where}.{key}", f"must be a boolean, not {_json_type(found)}")
    return found


def _json_type(value: Any) -> str:
    names = {dict: "a map", list: "a list", str: "a string", bool: "a boolean", int: "an integer"}
    if value is None:
        return "null"
    return names.get(type(value), "a real" if isinstance(value, float) else type(value).__name__)


def _address_text(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
