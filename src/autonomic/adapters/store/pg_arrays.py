"""A PostgreSQL commit's column arrays, written in binary by type, without psycopg's list scan.

A commit sends its journal rows and blobs as column arrays (``postgres._APPEND``: ``unnest`` of
one array per column). psycopg dumps a plain ``list`` by first finding what its elements are (a
scan of the list, a dumper lookup, an upgrade to the array's type) and then each element through
that type's dumper: per parameter, per commit - about a tenth of a step's client CPU with 50
runs in flight on PostgreSQL (issue 17). The columns' types are known here, so each array is a
``list`` subclass naming its type, and its dumper writes PostgreSQL's binary array format at
once: a header (one dimension, no nulls, the element type, the length, lower bound 1), then
each element as its length and its bytes. The server reads the same values as from psycopg's
own binary arrays, so the rows are the same.

Elements are never ``None`` (no journal or blob column is nullable).
"""

from __future__ import annotations

import struct
from typing import Any

import psycopg
from psycopg import pq
from psycopg.abc import AdaptContext, Buffer
from psycopg.adapt import Dumper

__all__ = ["BigintArray", "ByteaArray", "Float8Array", "TextArray"]

_EMPTY = struct.Struct("!iiI")  # no dimension, no nulls, element type
_HEAD = struct.Struct("!iiIii")  # one dimension, no nulls, element type, length, lower bound
_LENGTH = struct.Struct("!i")
_INT8 = struct.Struct("!iq")  # an element: its length (8) and its value
_FLOAT8 = struct.Struct("!id")

_TEXT, _TEXT_ARRAY = 25, 1009
_BYTEA, _BYTEA_ARRAY = 17, 1001
_INT8_OID, _INT8_ARRAY = 20, 1016
_FLOAT8_OID, _FLOAT8_ARRAY = 701, 1022


class TextArray(list[str]):
    """A ``text[]`` parameter."""


class ByteaArray(list[bytes]):
    """A ``bytea[]`` parameter."""


class BigintArray(list[int]):
    """A ``bigint[]`` parameter."""


class Float8Array(list[float]):
    """A ``double precision[]`` parameter."""


def _array(element: int, count: int, body: bytes) -> bytes:
    if not count:
        return _EMPTY.pack(0, 0, element)
    return _HEAD.pack(1, 0, element, count, 1) + body


def _sized(items: list[bytes]) -> bytes:
    pack = _LENGTH.pack
    return b"".join([part for item in items for part in (pack(len(item)), item)])


class _TextArrayDumper(Dumper):
    format = pq.Format.BINARY
    oid = _TEXT_ARRAY

    def __init__(self, cls: type, context: AdaptContext | None = None) -> None:
        super().__init__(cls, context)
        encoding = self.connection.info.encoding if self.connection is not None else "utf-8"
        self._encoding = encoding if encoding != "ascii" else "utf-8"  # as psycopg's own

    def dump(self, obj: TextArray) -> Buffer:
        encoding = self._encoding
        return _array(_TEXT, len(obj), _sized([item.encode(encoding) for item in obj]))


class _ByteaArrayDumper(Dumper):
    format = pq.Format.BINARY
    oid = _BYTEA_ARRAY

    def dump(self, obj: ByteaArray) -> Buffer:
        return _array(_BYTEA, len(obj), _sized([bytes(item) for item in obj]))


class _EightByteArrayDumper(Dumper):
    """An array of 8-byte elements: each its length (8) and its value, packed by ``item``."""

    format = pq.Format.BINARY
    element: int
    item: struct.Struct

    def dump(self, obj: list[Any]) -> Buffer:
        pack = self.item.pack
        return _array(self.element, len(obj), b"".join([pack(8, item) for item in obj]))


class _BigintArrayDumper(_EightByteArrayDumper):
    oid, element, item = _INT8_ARRAY, _INT8_OID, _INT8


class _Float8ArrayDumper(_EightByteArrayDumper):
    oid, element, item = _FLOAT8_ARRAY, _FLOAT8_OID, _FLOAT8


psycopg.adapters.register_dumper(TextArray, _TextArrayDumper)
psycopg.adapters.register_dumper(ByteaArray, _ByteaArrayDumper)
psycopg.adapters.register_dumper(BigintArray, _BigintArrayDumper)
psycopg.adapters.register_dumper(Float8Array, _Float8ArrayDumper)
