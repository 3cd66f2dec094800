"""A quick accept for the JSON schemas tools usually have, before the full validator.

Every tool call's arguments are validated against the tool's schema (``Tool.validate``), and
most of those schemas are what ``@tool`` derives from a signature: an object of typed
properties, some required, no others. ``jsonschema`` walks such a schema through its general
machinery (a generator per keyword, a scope per property): about 4 % of a durable step's CPU on
the default path (issue 17). ``quick_accept`` compiles a schema of the few keywords those schemas
use into a plain predicate that says *valid* or *don't know*:

* ``True``: the value is valid, as ``jsonschema``'s Draft 2020-12 validator would say;
* ``False``: maybe not - the caller asks the full validator, which finds the error and words it
  as before. A value of a type JSON does not have (an ``int`` subclass, an ``OrderedDict``) is
  always *don't know*.

A schema with any other keyword (``$ref``, ``minimum``, ``pattern``, ``format``, ``oneOf`` ...)
compiles to ``None``: the full validator alone, as before. So what is accepted, what is refused
and every error message are unchanged; only the common valid case is quicker.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Accept = Callable[[Any], bool]
"""``True``: valid under the schema; ``False``: ask the full validator."""

_ANNOTATIONS = frozenset(
    {
        "title",
        "description",
        "default",
        "examples",
        "$comment",
        "deprecated",
        "readOnly",
        "writeOnly",
    }
)
"""Keywords that never make a value invalid."""

_JSON_TYPES = frozenset({dict, list, str, int, float, bool, type(None)})
"""The exact Python types ``json.loads`` makes: for these, ``type(v) is T`` and ``jsonschema``'s
``isinstance`` checks agree."""


def _is_integer(value: Any) -> bool:
    kind = type(value)
    return kind is int or (kind is float and value.is_integer())


_TYPES: Mapping[str, Accept] = {
    "string": lambda v: type(v) is str,
    "integer": _is_integer,
    "number": lambda v: type(v) is int or type(v) is float,
    "boolean": lambda v: type(v) is bool,
    "null": lambda v: v is None,
    "object": lambda v: type(v) is dict,
    "array": lambda v: type(v) is list,
}
"""Draft 2020-12's types over the exact JSON types (an integral float is an integer)."""


def quick_accept(schema: Any) -> Accept | None:
    """The quick predicate of ``schema``, or ``None`` when it uses a keyword this does not know
    (see the module docstring)."""
    return _compile(schema)


def _always(value: Any) -> bool:
    return type(value) in _JSON_TYPES


def _compile(schema: Any) -> Accept | None:
    if schema is True:
        return _always
    if not isinstance(schema, dict):
        return None  # ``false`` (nothing is valid) or not a schema: the full validator says
    type_check: Accept | None = None
    properties: dict[str, Accept] = {}
    required: tuple[str, ...] = ()
    additional: Accept | None = None
    closed = False
    items: Accept | None = None
    any_of: tuple[Accept, ...] | None = None
    enum: tuple[Any, ...] | None = None
    for key, value in schema.items():
        if key in _ANNOTATIONS:
            continue
        if key == "type":
            names = [value] if isinstance(value, str) else value
            if not isinstance(names, list) or not names:
                return None
            checks = [_TYPES.get(n) if isinstance(n, str) else None for n in names]
            if any(c is None for c in checks):
                return None
            found = [c for c in checks if c is not None]
            type_check = found[0] if len(found) == 1 else _any_of(tuple(found))
        elif key == "properties":
            if not isinstance(value, dict):
                return None
            for name, sub in value.items():
                compiled = _compile(sub)
                if compiled is None:
                    return None
                properties[name] = compiled
        elif key == "required":
            if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
                return None
            required = tuple(value)
        elif key == "additionalProperties":
            if value is False:
                closed = True
            elif value is not True:
                additional = _compile(value)
                if additional is None:
                    return None
        elif key == "items":
            items = _compile(value)
            if items is None:
                return None
        elif key == "anyOf":
            if not isinstance(value, list) or not value:
                return None
            compiled_any = [_compile(sub) for sub in value]
            if any(c is None for c in compiled_any):
                return None
            any_of = tuple(c for c in compiled_any if c is not None)
        elif key == "enum":
            if not isinstance(value, list):
                return None
            enum = tuple(value)
        else:
            return None
    if (
        type_check is not None
        and not (properties or required or additional or closed)
        and (items is None and any_of is None and enum is None)
    ):
        return type_check  # a property's usual schema: its type alone
    return _node(type_check, properties, required, additional, closed, items, any_of, enum)


def _any_of(checks: tuple[Accept, ...]) -> Accept:
    def accept(value: Any) -> bool:
        return any(check(value) for check in checks)

    return accept


def _in_enum(value: Any, members: tuple[Any, ...]) -> bool:
    """Whether ``value`` is one of ``members`` by a comparison ``jsonschema``'s ``equal`` agrees
    with: the same scalar type and equal (``1`` and ``True``, ``1`` and ``1.0``, containers:
    don't know)."""
    kind = type(value)
    if kind not in (str, int, float, bool, type(None)):
        return False
    return any(type(member) is kind and member == value for member in members)


def _node(
    type_check: Accept | None,
    properties: dict[str, Accept],
    required: tuple[str, ...],
    additional: Accept | None,
    closed: bool,
    items: Accept | None,
    any_of: tuple[Accept, ...] | None,
    enum: tuple[Any, ...] | None,
) -> Accept:
    objects = bool(properties or required or additional is not None or closed)
    get = properties.get

    def accept(value: Any) -> bool:
        kind = type(value)
        if kind not in _JSON_TYPES:
            return False
        if type_check is not None and not type_check(value):
            return False
        if objects and kind is dict:  # the object keywords apply to objects only
            for name in required:
                if name not in value:
                    return False
            for name, item in value.items():
                check = get(name)
                if check is None:
                    if closed or (additional is not None and not additional(item)):
                        return False
                elif not check(item):
                    return False
        if items is not None and kind is list and not all(map(items, value)):
            return False
        if any_of is not None and not any(check(value) for check in any_of):
            return False
        return enum is None or _in_enum(value, enum)

    return accept
