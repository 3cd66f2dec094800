"""The shared SQL of the stores: written once with ``:name`` parameters, translated per driver."""

from __future__ import annotations

import re

import pytest

from autonomic.adapters.store.postgres import PostgresStore
from autonomic.adapters.store.sql import SqlStore, Statements, translate
from autonomic.adapters.store.sqlite import SQLiteStore


def test_translate_to_pyformat_keeps_casts_and_escapes_percent() -> None:
    neutral = "SELECT :a::text, 7 % 2 FROM t WHERE x = CAST(:b_1 AS BIGINT) AND (:c)"
    assert translate(neutral, "pyformat") == (
        "SELECT %(a)s::text, 7 %% 2 FROM t WHERE x = CAST(%(b_1)s AS BIGINT) AND (%(c)s)"
    )


def test_translate_to_named_is_the_neutral_text() -> None:
    neutral = "UPDATE t SET a = :a WHERE id = :id"
    assert translate(neutral, "named") is neutral


def _statements(store: type[SqlStore]) -> dict[str, str]:
    return {name: sql for name, sql in vars(store.sql).items() if isinstance(sql, str)}


@pytest.mark.parametrize("store", [SQLiteStore, PostgresStore])
def test_every_shared_statement_is_translated_for_each_dialect(store: type[SqlStore]) -> None:
    neutral = {
        name: sql
        for name, sql in vars(Statements).items()
        if isinstance(sql, str) and not name.startswith("__")
    }
    translated = _statements(store)
    assert translated.keys() == neutral.keys()
    for name, sql in translated.items():
        assert "{claim_lock}" not in sql, name
        if store.paramstyle == "pyformat":
            assert not re.search(r"(?<![:\w]):\w", sql), f"{name} still has a :name parameter"


def test_only_postgres_skips_locked_rows_when_claiming() -> None:
    assert "FOR UPDATE SKIP LOCKED" in PostgresStore.sql.claim
    assert "FOR UPDATE" not in SQLiteStore.sql.claim
