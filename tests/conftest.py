"""Shared fixtures: a fresh database per test on each store, a store factory, raw SQL access, a
reachable Redis with a key prefix per test.

No async plugin is used: tests are plain functions that call ``asyncio.run``.

PostgreSQL tests run in a schema of their own (``t_<uuid hex>``) in the database named by
``AUTONOMIC_TEST_PG_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``); the schema is
dropped afterwards. Without a reachable server they are skipped, unless ``CI`` is set: then they fail.
Redis tests (``redis_server``) behave the same with ``AUTONOMIC_TEST_REDIS_URL``.

``scripts/test`` runs pytest in parallel (pytest-xdist, ``--dist loadgroup``). Every fixture here
is private to its test (a schema, a key prefix, a ``tmp_path``), so tests may share the machine,
except those that look at the whole host: the sandbox tests count processes under the sandbox
uids, QEMU processes and ``/tmp`` entries after each run, and would see a neighbour's. They are
one scheduling group (``HOST_WIDE``), so one worker runs them one after another.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import socket
import sqlite3
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from autonomic.adapters.store.rows import redact_url
from autonomic.adapters.store.sqlite import parse_sqlite_url
from autonomic.bootstrap import build_store
from autonomic.ports.store import Store

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

MakeStore = Callable[[str], Awaitable[Store]]
RawExecute = Callable[[str], Awaitable[list[tuple[Any, ...]]]]


HOST_WIDE = (
    "tests/adapters/sandbox/",
    "tests/testing/test_probes.py",
    "tests/toolbox/test_python_exec.py",
)
"""Tests that check host-wide state (sandbox processes, QEMU processes, ``/tmp``): one worker."""


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """pytest-xdist's ``--dist loadgroup`` scheduling with ``HOST_WIDE`` as the one group.

    Not the ``xdist_group`` mark: xdist 3.8 groups by renaming ``item._nodeid``, which pytest 9
    no longer reads, so marked tests were spread over all workers.
    """
    from xdist.scheduler import LoadScopeScheduling

    class HostWideScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "host-wide" if nodeid.startswith(HOST_WIDE) else nodeid

    return HostWideScheduling(config, log)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--slow", action="store_true", default=False, help="also run tests marked slow"
    )


def pg_base_url() -> str:
    return os.environ.get("AUTONOMIC_TEST_PG_URL") or DEFAULT_PG_URL


def with_search_path(url: str, schema: str) -> str:
    """``url`` with libpq options that put ``schema`` first on the search path."""
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"


async def make_store(url: str) -> Store:
    """A store for ``url`` built by the composition root, migrated."""
    store = build_store(url)
    await store.migrate()
    return store


def raw_executor(url: str) -> RawExecute:
    """Runs one SQL statement on a new raw connection (autocommit), returning its rows."""
    if url.startswith("sqlite:"):
        path, _ = parse_sqlite_url(url)

        async def run_sqlite(sql: str) -> list[tuple[Any, ...]]:
            conn = sqlite3.connect(path, isolation_level=None)
            try:
                return [tuple(row) for row in conn.execute(sql).fetchall()]
            finally:
                conn.close()

        return run_sqlite

    import psycopg

    async def run_postgres(sql: str) -> list[tuple[Any, ...]]:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            cur = await conn.execute(sql)
            return [tuple(row) for row in await cur.fetchall()] if cur.description else []

    return run_postgres


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The base URL of a reachable PostgreSQL server, checked once per session."""
    base = pg_base_url()
    try:
        import psycopg
    except ImportError as exc:  # the postgres extra is not installed
        reason = f"psycopg is not installed ({exc})"
    else:
        try:
            with psycopg.connect(base, connect_timeout=5) as conn:
                conn.execute("SELECT 1")
            return base
        except psycopg.Error as exc:
            reason = f"PostgreSQL at {redact_url(base)} is unreachable: {str(exc).strip()}"
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is an error; set AUTONOMIC_TEST_PG_URL)")
    pytest.skip(f"{reason}; set AUTONOMIC_TEST_PG_URL to run the PostgreSQL tests")


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A URL to a fresh, empty schema of its own, dropped after the test."""
    import psycopg

    schema = f"t_{uuid.uuid4().hex}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield with_search_path(pg_server, schema)
    finally:
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def pgbouncer_url(pg_server: str) -> Iterator[str]:
    """A URL through pgBouncer in transaction pooling mode to a fresh schema of its own.

    The schema cannot be chosen with ``options=-csearch_path`` (pgBouncer 1.18 refuses startup
    options), nor with ``SET`` (a transaction pooler keeps no session): each test gets a role of
    its own whose default ``search_path`` is its schema, as a deployment behind pgBouncer would
    (docs/stores.md#behind-pgbouncer). ``AUTONOMIC_TEST_PGBOUNCER_URL`` (``scripts/lib/pgbouncer.sh``) names
    the pooler; without it the test is skipped.
    """
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    base = os.environ.get("AUTONOMIC_TEST_PGBOUNCER_URL")
    if not base:
        pytest.skip(
            "AUTONOMIC_TEST_PGBOUNCER_URL is not set: no pgBouncer to test through "
            "(scripts/test starts one with scripts/lib/pgbouncer.sh)"
        )
    role = f"t_{uuid.uuid4().hex}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN')
        conn.execute(f'CREATE SCHEMA "{role}" AUTHORIZATION "{role}"')
        conn.execute(f'ALTER ROLE "{role}" SET search_path = "{role}"')
    params = conninfo_to_dict(base) | {"user": role}
    host, port, dbname = params.get("host"), params.get("port"), params.get("dbname")
    try:
        yield f"postgresql://{role}@{host}:{port}/{dbname}?pooler=transaction"
    finally:
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{role}" CASCADE')
            conn.execute(f'DROP ROLE "{role}"')


STORES_AND_POOLER = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    pytest.param("pgbouncer", id="pgbouncer", marks=pytest.mark.postgres),
]
"""``store_url``'s stores, and PostgreSQL behind pgBouncer's transaction pooling: what the crash
and lease tests run on (a module opts in by defining its ``store_url`` as ``store_url_or_pooler``)."""


@pytest.fixture(params=STORES_AND_POOLER)
def store_url_or_pooler(request: pytest.FixtureRequest) -> str:
    """The URL of a fresh database, once per store, and once through pgBouncer."""
    url: str = request.getfixturevalue(
        {"sqlite": "sqlite_url", "postgres": "pg_url", "pgbouncer": "pgbouncer_url"}[request.param]
    )
    return url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A URL to a new SQLite file in the test's temporary directory."""
    return f"sqlite:///{tmp_path}/autonomic.db"


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def store_url(request: pytest.FixtureRequest) -> str:
    """The URL of a fresh database, once per store."""
    url: str = request.getfixturevalue(
        {"sqlite": "sqlite_url", "postgres": "pg_url"}[request.param]
    )
    return url


@pytest.fixture(name="make_store")
def make_store_fixture() -> MakeStore:
    """``await make_store(url)``: a new migrated store on ``url`` (close it yourself)."""
    return make_store


def fingerprint(path: Path) -> tuple[str, int, int]:
    """A file's content hash, size and modification time: the same before and after something
    means it wrote nothing into the file."""
    stat = path.stat()
    return hashlib.sha256(path.read_bytes()).hexdigest(), stat.st_size, stat.st_mtime_ns


@pytest.fixture(name="fingerprint")
def fingerprint_fixture() -> Callable[[Path], tuple[str, int, int]]:
    """``fingerprint(path)``: see ``fingerprint``."""
    return fingerprint


@pytest.fixture
def autonomic_sqlite(tmp_path: Path) -> Path:
    """A valid autonomic SQLite file of about 50 pages (12 runs of 25 entries), closed."""
    from autonomic.testing.store_conformance import make_entries, make_run

    path = tmp_path / "autonomic.db"

    async def write() -> None:
        store = await make_store(f"sqlite:///{path}")
        for _ in range(12):
            run = make_run()
            payloads = [{"step": i, "text": "x" * 300} for i in range(25)]
            await store.create_run(run, make_entries(run.id, payloads))
        await store.close()

    asyncio.run(write())
    return path


def damage_middle_page(path: Path, table: str = "journal") -> str:
    """Overwrite 2,000 bytes of the middle leaf page of ``table`` with garbage, as a bad sector
    would, and return what ``PRAGMA quick_check`` then reports (never ``ok``)."""
    db = sqlite3.connect(path)
    try:
        pages = [
            int(row[0])
            for row in db.execute(
                "SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf' ORDER BY pageno",
                (table,),
            )
        ]
        (page_size,) = db.execute("PRAGMA page_size").fetchone()
    finally:
        db.close()
    page = pages[len(pages) // 2]
    offset = (page - 1) * page_size + 100
    with path.open("rb") as f:
        f.seek(offset)
        original = f.read(2000)
    # Some garbage makes quick_check itself raise ("malformed") instead of reporting the damage;
    # the tests want a report, so try a few seeds (deterministic) until the check reports one.
    for seed in range(page, page + 50):
        with path.open("r+b") as f:
            f.seek(offset)
            f.write(random.Random(seed).randbytes(2000))
        db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
        try:
            report = "\n".join(str(row[0]) for row in db.execute("PRAGMA quick_check"))
            break
        except sqlite3.DatabaseError:
            with path.open("r+b") as f:
                f.seek(offset)
                f.write(original)
        finally:
            db.close()
    else:  # pragma: no cover - the schema changed beyond what 50 seeds cover
        raise AssertionError(f"no garbage on page {page} of {path} gave a quick_check report")
    assert report != "ok", f"page {page} of {path} was overwritten, yet quick_check says ok"
    return report


@pytest.fixture
def damaged_sqlite(autonomic_sqlite: Path) -> Path:
    """``autonomic_sqlite`` with one journal page in the middle of the file overwritten."""
    damage_middle_page(autonomic_sqlite)
    return autonomic_sqlite


@pytest.fixture
def raw_execute(store_url: str) -> RawExecute:
    """``await raw_execute(sql)`` on the database of ``store_url``, outside any store."""
    return raw_executor(store_url)


@pytest.fixture
def kafka_url() -> str:
    """A ``kafka://`` URL on the broker ``scripts/test`` starts (``AUTONOMIC_TEST_KAFKA_URL``,
    set by ``ensure_kafka`` in ``scripts/lib/kafka.sh``) with a fresh topic prefix and a 2 s
    session (quick rebalances). Without the variable the test is skipped (saying so); with it
    set, a broker that does not answer fails it."""
    base = os.environ.get("AUTONOMIC_TEST_KAFKA_URL")
    if not base:
        pytest.skip("AUTONOMIC_TEST_KAFKA_URL is unset (scripts/test starts Tansu and sets it)")
    host, _, port = base.removeprefix("kafka://").partition(",")[0].rpartition(":")
    with socket.create_connection((host, int(port)), timeout=5):
        pass
    prefix = f"t{uuid.uuid4().hex[:10]}."
    return f"{base}?prefix={prefix}&session_timeout_ms=2000&request_timeout_ms=3000"


@pytest.fixture(scope="session")
def redis_server() -> str:
    """The URL of a reachable Redis, checked once (``AUTONOMIC_TEST_REDIS_URL``); skipped without
    one unless ``CI`` is set. Used by the gateway's shared limits and the shared breakers."""
    url = os.environ.get("AUTONOMIC_TEST_REDIS_URL") or DEFAULT_REDIS_URL
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3)
        client.ping()
        client.close()
    except redis.RedisError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Redis at {url} is unreachable: {exc} (CI is set, so this is an error)")
        pytest.skip(f"Redis at {url} is unreachable: {exc}; set AUTONOMIC_TEST_REDIS_URL")
    return url


@pytest.fixture
def redis_prefix(redis_server: str) -> Iterator[str]:
    """A key prefix of this test's own (others share this Redis); its keys are deleted after."""
    prefix = f"autonomic-test:{uuid.uuid4().hex}"
    yield prefix
    import redis

    client = redis.Redis.from_url(redis_server, socket_connect_timeout=3)
    try:
        for key in client.scan_iter(match=f"{prefix}*", count=500):
            client.delete(key)
    finally:
        client.close()
