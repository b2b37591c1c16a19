"""Declared command arguments: a ``TypedDict`` turned into a checker that refuses bad ``arguments`` with
Kea's texts before the handler runs. Pure: no I/O.

The declaration is a plain ``TypedDict``. Kea's parameter names have dashes, which the functional form
spells directly, so the keys a handler reads are the wire's keys and mypy checks them::

    LeaseQuery = TypedDict("LeaseQuery", {"ip-address": str, "subnet-id": NotRequired[int]})

Checks are derived from the type hints rather than from a validation library: pydantic-core is compiled
(a zipapp cannot import it) and costs start-up time, and the JSON a request carries needs only a few
checks (types, required keys, unknown keys, literals).

Supported hints: ``str``, ``int`` (not ``bool``), ``float`` (an integer is accepted), ``bool``, ``None``,
``list[T]``, ``dict[str, T]``, a nested ``TypedDict``, ``Literal[...]``, unions of these (``T | None``),
and ``Any``, ``object`` or ``JsonValue`` for anything. Anything else is a ``TypeError`` at registration.
"""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal, Union, get_args, get_origin, is_typeddict

from ctrlsock.errors import CommandError
from ctrlsock.protocol import PROCESSING_ERROR_PREFIX

__all__ = ["ArgumentSpec", "UnknownKeys", "compile_arguments"]


class UnknownKeys(enum.StrEnum):
    """What a key the declaration does not name gets."""

    REJECT = "reject"
    """``unknown parameter 'NAME'``: a misspelt optional key is reported instead of silently ignored."""
    IGNORE = "ignore"
    """Accepted and passed on to the handler unchecked (Kea's commands mostly do this)."""


_Check = Callable[[object, str], str | None]
"""``check(value, where)``: ``None`` if the value fits, else the refusal text (``where`` names the value)."""

_SCALARS: Final[dict[object, tuple[str, Callable[[object], bool]]]] = {
    str: ("a string", lambda value: isinstance(value, str)),
    int: ("an integer", lambda value: isinstance(value, int) and not isinstance(value, bool)),
    float: ("a number", lambda value: isinstance(value, int | float) and not isinstance(value, bool)),
    bool: ("a boolean", lambda value: isinstance(value, bool)),
    type(None): ("null", lambda value: value is None),
}


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, list):
        return "list"
    return "map"


class _Expected:
    """One hint compiled: its words (``a string``) and its check."""

    __slots__ = ("check", "words")

    def __init__(self, words: str, check: _Check) -> None:
        self.words = words
        self.check = check


def _anything(value: object, where: str) -> str | None:
    return None


def _unwrap(hint: object) -> tuple[object, object]:
    """The hint without ``Annotated``, ``Required`` and ``NotRequired``, and which of the last two it had."""
    marked: object = None
    while True:
        origin = get_origin(hint)
        if origin is typing.Annotated:
            hint = get_args(hint)[0]
        elif origin is typing.Required or origin is typing.NotRequired:
            marked = origin
            hint = get_args(hint)[0]
        else:
            return hint, marked


def _compile(hint: object, owner: str) -> _Expected:
    hint, _marked = _unwrap(hint)
    if hint is Any or hint is object:
        return _Expected("any value", _anything)
    if isinstance(hint, typing.ForwardRef):
        # ctrlsock.protocol.JsonValue refers to itself by name; the request is JSON already.
        if hint.__forward_arg__ == "JsonValue":
            return _Expected("any value", _anything)
        raise TypeError(f"{owner}: cannot check the unresolved type {hint.__forward_arg__!r}")
    if hint in _SCALARS:
        words, accepts = _SCALARS[hint]

        def check_scalar(value: object, where: str) -> str | None:
            return None if accepts(value) else f"'{where}' must be {words}, not {_json_type(value)}"

        return _Expected(words, check_scalar)
    if is_typeddict(hint):
        return _compile_map(hint, UnknownKeys.REJECT)
    origin = get_origin(hint)
    args = get_args(hint)
    if origin is Literal:
        allowed = args
        shown = ", ".join(repr(value) for value in allowed)

        def check_literal(value: object, where: str) -> str | None:
            # bool == int in Python: True must not pass for Literal[1].
            if any(type(value) is type(choice) and value == choice for choice in allowed):
                return None
            return f"'{where}' must be one of {shown}"

        return _Expected(f"one of {shown}", check_literal)
    if origin is Union or origin is types.UnionType:
        members = [_compile(arg, owner) for arg in args]
        words = " or ".join(member.words for member in members)

        def check_union(value: object, where: str) -> str | None:
            if any(member.check(value, where) is None for member in members):
                return None
            return f"'{where}' must be {words}, not {_json_type(value)}"

        return _Expected(words, check_union)
    if origin is list and len(args) == 1:
        item = _compile(args[0], owner)

        def check_list(value: object, where: str) -> str | None:
            if not isinstance(value, list):
                return f"'{where}' must be a list, not {_json_type(value)}"
            for index, element in enumerate(value):
                refusal = item.check(element, f"{where}[{index}]")
                if refusal is not None:
                    return refusal
            return None

        return _Expected("a list", check_list)
    if origin is dict and len(args) == 2 and args[0] is str:
        member = _compile(args[1], owner)

        def check_dict(value: object, where: str) -> str | None:
            if not isinstance(value, dict):
                return f"'{where}' must be a map, not {_json_type(value)}"
            for key, element in value.items():
                refusal = member.check(element, f"{where}.{key}")
                if refusal is not None:
                    return refusal
            return None

        return _Expected("a map", check_dict)
    raise TypeError(f"{owner}: cannot check arguments of type {hint!r}")


def _compile_map(declaration: Any, unknown: UnknownKeys) -> _Expected:
    name = getattr(declaration, "__name__", repr(declaration))
    try:
        hints = typing.get_type_hints(declaration, include_extras=True)
    except NameError as error:
        raise TypeError(f"{name}: cannot resolve its type hints: {error}") from None
    fields: dict[str, _Expected] = {}
    required_in_order: list[str] = []
    for key, hint in hints.items():
        inner, marked = _unwrap(hint)
        # Python 3.11 sees no NotRequired in a class body's string annotations (PEP 563) and lists
        # the key in __required_keys__: the marker found in the resolved hint wins.
        if marked is typing.Required or (marked is None and key in declaration.__required_keys__):
            required_in_order.append(key)
        fields[key] = _compile(inner, name)
    reject_unknown = unknown is UnknownKeys.REJECT

    def check_map(value: object, where: str) -> str | None:
        if not isinstance(value, dict):
            return f"'{where}' must be a map, not {_json_type(value)}"
        prefix = "" if where == "arguments" else f"{where}."
        for key in required_in_order:
            if key not in value:
                return f"missing parameter '{prefix}{key}'"
        for key, element in value.items():
            expected = fields.get(key)
            if expected is None:
                if reject_unknown:
                    return f"unknown parameter '{prefix}{key}'"
                continue
            refusal = expected.check(element, f"{prefix}{key}")
            if refusal is not None:
                return refusal
        return None

    return _Expected("a map", check_map)


class ArgumentSpec:
    """A compiled declaration; :meth:`check` is what the registry calls before the handler."""

    __slots__ = ("_check", "declaration")

    def __init__(self, declaration: type[Mapping[str, Any]], check: _Check) -> None:
        self.declaration = declaration
        self._check = check

    def check(self, arguments: object) -> object:
        """The arguments to pass to the handler (absent ones as ``{}``).

        Raises:
            CommandError: result 1 with Kea's ``Error during command processing: `` prefix and the first
                problem found, e.g. ``missing parameter 'ip-address'``.
        """
        if arguments is None:
            arguments = {}
        refusal = self._check(arguments, "arguments")
        if refusal is not None:
            raise CommandError(PROCESSING_ERROR_PREFIX + refusal)
        return arguments

    def __repr__(self) -> str:
        return f"ArgumentSpec({getattr(self.declaration, '__name__', self.declaration)!r})"


def compile_arguments(
    declaration: type[Mapping[str, Any]], *, unknown: UnknownKeys | str = UnknownKeys.REJECT
) -> ArgumentSpec:
    """Compile a ``TypedDict`` declaration of a command's arguments into its checker.

    Nested ``TypedDict`` values always reject unknown keys; ``unknown`` applies to the top level.

    Raises:
        TypeError: the declaration is not a ``TypedDict``, or uses a hint that cannot be checked.
    """
    if not is_typeddict(declaration):
        raise TypeError(f"arguments must be declared by a TypedDict, not {declaration!r}")
    return ArgumentSpec(declaration, _compile_map(declaration, UnknownKeys(unknown)).check)
