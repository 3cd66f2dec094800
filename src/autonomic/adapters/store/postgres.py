"""The production store: PostgreSQL through psycopg 3 and an async connection pool.

Semantics are those of ``SQLiteStore``: both are a ``SqlStore`` (``sql.py``), which holds the
statements and decisions they share, and the conformance suite in
``autonomic.testing.store_conformance`` holds both to them. What differs is how they are reached:

* Every write is one SQL statement, so one round trip and its own transaction (connections run in
  autocommit). ``commit`` is a single ``WITH`` statement: it locks the run's row, applies the
  guarded ``UPDATE runs ... RETURNING version``, and inserts the journal rows and blobs only if
  that update matched; it also returns the row's version and fence as of the statement's start,
  so a refused commit is usually classified (``NotFound``, ``LeaseLost`` or ``StaleVersion``)
  without another round trip (one more when it lost a race that began during the statement).
* Group commit: while one group of commits is on its way to the server, later commits queue; the
  next group goes as one transaction of pipelined statements (one round trip, one WAL flush). A
  commit that finds no group in flight goes alone, so a lone run pays nothing for the grouping;
  so does a commit with approvals, in a transaction with its approval writes.
* ``claim`` picks a run with ``FOR UPDATE SKIP LOCKED``, so concurrent workers never wait on one
  another and never get the same run.
* ``migrate`` runs under ``pg_advisory_xact_lock`` keyed on the schema, so concurrent migrators of
  one schema take turns and each migration is applied once.

What the schema holds is looked at before it is used (``schema.py``): another application's
tables, or a schema written by a newer autonomic, are refused. ``readonly`` makes every
connection's transactions read-only, so the server itself refuses a write.

The URL is handed to libpq: ``postgresql://`` or ``postgres://``, with any parameters libpq
knows (``options=-csearch_path%3Dmyschema``, ``sslmode``, ``connect_timeout`` ...), and one of
autonomic's own, taken out before libpq sees the URL: ``pooler=transaction`` says the URL leads
to a pooler in transaction pooling mode (pgBouncer's ``pool_mode = transaction``), where two
statements of one connection may run on two server sessions. Then nothing relies on session state:
no prepared statements (psycopg's ``prepare_threshold=None``), a read-only store begins each
transaction ``READ ONLY`` instead of setting it for the session, and the embedded bus polls instead
of ``LISTEN``. See docs/stores.md#behind-pgbouncer.

Opening is cheap, since a fresh worker pays it before its first step: the pool opens on first use
with one connection, made in the background while a direct connection checks that the server
answers (so an unreachable server fails at once with a message naming it, instead of after the
pool's timeout); ``verify`` and ``migrate`` then read the migration record in one statement
(``SqlStore._is_current``). Outside a transaction pooler, the statements of the hot path (the
commit, the claim, reading a run and its journal) are prepared on a connection's first use of
them, without a round trip of their own (``_execute``), and the store's first connection prepares
the reads a step starts with and plans the commit while the store opens (``_prepare_hot``), so a
fresh worker's first step does not pay for the server session's first look at the catalog.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import unquote

import psycopg
import psycopg.errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from autonomic.adapters.store.pg_arrays import BigintArray, ByteaArray, Float8Array, TextArray
from autonomic.adapters.store.rows import (
    blob_rows,
    entries_from_rows,
    journal_rows,
    redact_url,
)
from autonomic.adapters.store.sql import (
    COMMIT_GUARD,
    Anchor,
    CommitRequest,
    Execute,
    Params,
    Row,
    SqlStore,
    Statements,
    Written,
    run_params,
    translate,
)
from autonomic.core.audit import AuditNote, record_hash
from autonomic.core.events import Event
from autonomic.core.journal import Entry, PackedEntry, blob_reference
from autonomic.core.run import Run, RunChanges
from autonomic.errors import (
    ApprovalConflict,
    ConfigError,
    JournalConflict,
    RunExists,
    StoreUnavailable,
)
from autonomic.ports.store import Processed

Connection = psycopg.AsyncConnection[TupleRow]

_SCHEMES = ("postgresql", "postgres")
_POOLER = "pooler"
_POOLER_MODES = ("transaction", "session")
_DEFAULT_CONNECT_TIMEOUT = 10
_POOL_TIMEOUT = 30.0
_MIGRATION_LOCK = "autonomic.migrate"

# The statements only PostgreSQL runs, in neutral SQL like the shared ones (``sql.py``) and
# translated once, here. The explicit casts tell the server the types of the column arrays and of
# parameters it could not infer.

# Inserts of journal rows and blobs that only happen when the CTE ``head`` produced a row.
_APPEND = """
blob_rows AS (
    INSERT INTO blobs (address, data, size, created_at)
    SELECT a, d, s, :blob_at::double precision
    FROM unnest(:b_address::text[], :b_data::bytea[], :b_size::bigint[]) AS t(a, d, s)
    WHERE EXISTS (SELECT 1 FROM head)
    ON CONFLICT (address) DO NOTHING
),
journal_rows AS (
    INSERT INTO journal (run_id, seq, kind, payload, hash, created_at)
    SELECT r, s, k, p, h, c
    FROM unnest(
        :j_run_id::text[], :j_seq::bigint[], :j_kind::text[], :j_payload::text[],
        :j_hash::bytea[], :j_created_at::double precision[]
    ) AS t(r, s, k, p, h, c)
    WHERE EXISTS (SELECT 1 FROM head)
)"""

# The audit log's anchor of a commit (``core/audit.py``), appended when ``head`` produced a row.
# ``audit_head`` is the log's lock row: its UPDATE waits for any other appender and then sees the
# head that one left (READ COMMITTED re-reads an updated row), so appends chain one after another.
# The head stays hex text (the chain is computed over hex); the record keeps its hash as 32 bytes
# (``bytea`` since migration 0010, read back as hex by ``SqlStore.scan_audit_log``).
_ANCHOR = """
audit_next AS (
    UPDATE audit_head SET pos = audit_head.pos + 1,
        hash = encode(sha256(convert_to(audit_head.hash || chr(10) || (audit_head.pos + 1)::text
            || chr(10) || :anchor_kind::text || chr(10) || :anchor_digest::text, 'UTF8')), 'hex')
    WHERE EXISTS (SELECT 1 FROM head) AND :anchor_digest::text IS NOT NULL
    RETURNING pos, hash
),
audit_row AS (
    INSERT INTO audit_log (pos, kind, run_id, body, hash, created_at)
    SELECT pos, :anchor_kind::text, :anchor_run::text, :anchor_body::text, decode(hash, 'hex'),
           :now::double precision
    FROM audit_next
)"""

# Taken first by every commit, so that two writers never hold a run's row and the log's lock
# row in opposite orders (the guarded UPDATE refers to it: a one-time filter, evaluated first).
_AUDIT_GATE = "audit_gate AS (SELECT pos FROM audit_head FOR UPDATE),"

_PREPARED: weakref.WeakKeyDictionary[Connection, set[str]] = weakref.WeakKeyDictionary()
"""The hot statements each open connection has prepared (``PostgresStore._execute``)."""

_ARRAY_PARAMETER = re.compile(r"%\((\w+)\)s(::[a-z ]+\[\])")


def _binary_arrays(sql: str) -> str:
    """``sql`` with its array parameters (the column arrays of ``_APPEND``) sent in binary.

    psycopg writes a list as a text array in Python, quoting each element with a regular
    expression: for a commit's JSON payloads (every ``"`` escaped) that was about a fifth of a
    commit's CPU with 50 runs in flight (issue 17). The binary array is the elements' own bytes
    with their lengths; the server reads the same values, so the rows are the same."""
    return _ARRAY_PARAMETER.sub(r"%(\1)b\2", sql)


_CREATE = _binary_arrays(
    translate(
        f"WITH head AS ({Statements.insert_run} RETURNING id),{_APPEND},{_ANCHOR}\n"
        "SELECT id FROM head",
        "pyformat",
    )
)

# ``current`` is the row as this statement's snapshot saw it, which classifies most refusals in the
# same round trip; see ``PostgresStore._outcome`` for the one case that needs a second look.
_COMMIT = translate(
    f"""WITH {_AUDIT_GATE}
current AS (
    SELECT version AS current_version, fence AS current_fence
    FROM runs WHERE id = :run_id::text
),
head AS (
    UPDATE runs SET
        version = version + 1,
        updated_at = :now::double precision,
        lease_owner = CASE WHEN :release_lease::boolean THEN NULL ELSE lease_owner END,
        lease_expires_at = CASE WHEN :release_lease::boolean THEN 0
            ELSE COALESCE(:lease_expires_at::double precision, lease_expires_at) END,
        status = COALESCE(:status::text, status),
        status_reason = CASE WHEN :status::text IS NULL THEN status_reason
                             ELSE :status_reason::text END,
        output = CASE WHEN :set_output::boolean THEN :output::text ELSE output END,
        metadata = COALESCE(:metadata::text, metadata),
        agent_version = COALESCE(:agent_version::text, agent_version)
    WHERE {COMMIT_GUARD} AND EXISTS (SELECT 1 FROM audit_gate)
    RETURNING version
),{_APPEND},{_ANCHOR}
SELECT (SELECT version FROM head), (SELECT current_version FROM current),
       (SELECT current_fence FROM current)""",
    "pyformat",
)
_COMMIT = _binary_arrays(_COMMIT)

_EXPLAIN_COMMIT = "EXPLAIN " + _COMMIT


# What the schema a connection writes into (the first existing one on its search_path) holds.
_CATALOG = """SELECT current_schema(), ARRAY(
    SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
)"""


_PREPARING: contextvars.ContextVar[bool] = contextvars.ContextVar("_PREPARING", default=False)
"""Set while ``_prepare_hot`` tries its statements: on a schema that is not autonomic's (yet) they
fail, and psycopg warns "error ignored terminating <AsyncPipeline>" as it leaves the aborted
pipeline; that line must not reach a user, whose command then says what is wrong in its own
words."""


class _QuietWhilePreparing(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _PREPARING.get()


logging.getLogger("psycopg").addFilter(_QuietWhilePreparing())


class PostgresStore(SqlStore):
    """Runs in a PostgreSQL database. See the module docstring for how each write is made."""

    dialect = "postgres"
    paramstyle = "pyformat"
    claim_lock = "FOR UPDATE SKIP LOCKED"
    capacity_lock = "SELECT pg_advisory_xact_lock(hashtext(%(lock)s))"
    migrations_table = (
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
        "name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
    )
    migration_columns = (
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = 'schema_migrations'"
    )
    hash_hex = "encode(hash, 'hex')"  # on the server: cheaper than in Python, as cheap as text
    journal_select = "SELECT j.seq, j.kind, j.payload, j.hash, j.created_at, b.data"
    journal_join = """
LEFT JOIN blobs b ON starts_with(j.payload, '{"$blob":')
    AND b.address = (j.payload::json ->> '$blob')"""

    def __init__(
        self, url: str, *, min_size: int = 1, max_size: int = 20, readonly: bool = False
    ) -> None:
        """Keep the URL; the pool opens on first use.

        Args:
            url: ``postgresql://...`` (see the module docstring).
            min_size: connections the pool keeps open.
            max_size: connections the pool opens at most.
            readonly: every connection's transactions are read-only
                (``default_transaction_read_only``): the server refuses any write. What the
                read-only commands of the CLI use.
        """
        super().__init__()
        self.readonly = readonly
        scheme = url.partition("://")[0].lower()
        if scheme not in _SCHEMES:
            raise ConfigError(
                f"not a PostgreSQL URL: {redact_url(url)!r}",
                hint="write postgresql://user@host:5432/dbname",
            )
        self._secrets = _url_passwords(url)
        self.conninfo, pooler = _split_pooler(url)
        if pooler not in (None, *_POOLER_MODES):
            raise ConfigError(
                f"unknown {_POOLER}={pooler} in PostgreSQL URL {redact_url(url)!r}",
                hint=f"write {_POOLER}=transaction behind pgBouncer's transaction pooling, "
                "or leave it out",
            )
        self.transaction_pooled = pooler == "transaction"
        """Behind a transaction pooler: no session state (see the module docstring)."""
        self.listen_url = None if self.transaction_pooled else self.conninfo
        try:
            params = conninfo_to_dict(self.conninfo)
        except psycopg.ProgrammingError as exc:
            raise ConfigError(
                f"bad PostgreSQL URL {redact_url(url)!r}: {self._scrub(_first_line(exc))}",
                hint="write postgresql://user@host:5432/dbname",
            ) from None
        if params.get("password"):
            self._secrets.add(str(params["password"]))
        self.url = url
        self._min_size = min_size
        self._max_size = max_size
        host = str(params.get("host") or params.get("hostaddr") or "localhost")
        port = str(params.get("port") or "5432")
        self._target = f"{host}:{port}/{params.get('dbname') or params.get('user') or ''}"
        self._connect_kwargs: dict[str, Any] = {"autocommit": True}
        if self.transaction_pooled:  # a statement prepared on one server session is unknown
            self._connect_kwargs["prepare_threshold"] = None  # to the next one
        if "connect_timeout" not in params:
            self._connect_kwargs["connect_timeout"] = _DEFAULT_CONNECT_TIMEOUT
        self._pool: AsyncConnectionPool[Connection] | None = None
        self._opening = asyncio.Lock()
        self._closed = False
        self._flusher: asyncio.Task[None] | None = None

    # -- connections ------------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        """``text`` with any form of the URL's password replaced by ``***``."""
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        return StoreUnavailable(
            f"cannot reach PostgreSQL at {self._target}: {self._scrub(_first_line(exc))}",
            hint=f"is the server running and the URL right? ({redact_url(self.url)})",
        )

    async def _get_pool(self) -> AsyncConnectionPool[Connection]:
        if self._pool is not None:
            return self._pool
        if self._closed:
            raise StoreUnavailable("the PostgreSQL store is closed", hint="open a new store")
        async with self._opening:
            if self._pool is None:
                pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
                    self.conninfo,
                    kwargs=self._connect_kwargs,
                    min_size=self._min_size,
                    max_size=self._max_size,
                    open=False,
                    name="autonomic",
                    timeout=_POOL_TIMEOUT,
                    configure=self._configure,
                )
                # The pool's first connection is made in the background while the probe makes
                # its own: one connection's latency to open, not two in a row.
                await pool.open(wait=False)
                try:
                    probe = await psycopg.AsyncConnection.connect(
                        self.conninfo, **self._connect_kwargs
                    )
                except psycopg.OperationalError as exc:
                    await pool.close()
                    raise self._unavailable(exc) from None
                await probe.close()
                try:
                    # Its connection is (nearly) made: wait for it, since a request queued
                    # before it would make the pool grow a second one, and a fresh worker's first
                    # statements would then alternate between two cold server sessions.
                    await pool.wait(timeout=_POOL_TIMEOUT)
                except PoolTimeout as exc:
                    await pool.close()
                    raise self._unavailable(exc) from None
                self._pool = pool
        return self._pool

    async def _configure(self, conn: Connection) -> None:
        """What every new pooled connection gets before its first use (the pool's ``configure``).

        A read-only store's session setting; on a writer's first connection, outside a
        transaction pooler, the hot reads prepared (``_prepare_hot``).
        """
        if self.readonly:
            if self.transaction_pooled:
                await _read_only_transactions(conn)
            else:
                await _read_only(conn)
        # Only the connection the store opens with (``_get_pool`` waits for it; the pool is not
        # handed out yet): a fresh worker's first step runs on it. Connections the pool grows
        # under load would pay the same first look at the catalog in their first statements
        # anyway, and a burst of them would plan the commit twice each. A reader runs one
        # command and ends.
        if self._pool is None and not (self.transaction_pooled or self.readonly):
            await self._prepare_hot(conn)

    async def _prepare_hot(self, conn: Connection) -> None:
        """Prepare the reads a step starts with, on a connection the pool has just made.

        A new server session knows nothing of the catalog yet: the first statements that touch
        a table pay for loading what it knows of it, and of the types and functions they use,
        which a fresh worker would otherwise pay in its first step. Done here, in one round trip
        of reads that match no row, it is paid while the store opens (``verify``/``migrate``). Best
        effort: on a schema not made yet (before ``migrate``) the statements fail, and the
        connection is used as it is.
        """
        hot = (
            (self.sql.get_run, {"run_id": ""}),
            (self.sql.run_version, {"run_id": ""}),
            (self._journal_page_sql(False, False, False, 0), {"run_id": "", "after_seq": 0}),
        )
        # The commit cannot run here (it locks the audit log's head first): it is planned,
        # not run, which loads what it touches too.
        commit = self._commit_params("", 0, None, (), RunChanges(), 0.0) | _anchor_params(None)
        quiet = _PREPARING.set(True)  # a failed attempt is expected, not worth a warning
        try:
            async with conn.pipeline():
                for sql, params in hot:
                    await conn.execute(sql, params, prepare=True)
                await conn.execute(_EXPLAIN_COMMIT, commit)
        except psycopg.Error:
            return
        finally:
            _PREPARING.reset(quiet)
        _PREPARED.setdefault(conn, set()).update(sql for sql, _ in hot)

    def _reached(self) -> bool:
        return self._pool is not None

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Connection]:
        """A pooled connection (autocommit); driver errors that mean "unavailable" translated."""
        pool = await self._get_pool()
        try:
            async with pool.connection() as conn:
                if self.readonly and self.transaction_pooled:
                    async with conn.transaction():  # BEGIN READ ONLY (``_read_only_transactions``)
                        yield conn
                else:
                    yield conn
        except PoolTimeout as exc:
            raise self._unavailable(exc) from None
        except psycopg.errors.UndefinedTable:
            raise self._no_schema(redact_url(self.url)) from None
        except psycopg.errors.ReadOnlySqlTransaction:
            raise self._read_only() from None
        except psycopg.OperationalError as exc:
            if _is_disconnect(exc):
                raise self._unavailable(exc) from None
            raise

    def _hot(self, sql: str) -> bool:
        """Whether ``sql`` is a statement of the hot path, prepared (``_execute``)."""
        sqls = self.sql
        hot = (sqls.get_run, sqls.claim, sqls.renew_lease, sqls.release_lease, sqls.run_version)
        return sql in hot or sql in self._claims.values()

    async def _execute(
        self, conn: Connection, sql: str, params: Params, *, hot: bool = True
    ) -> psycopg.AsyncCursor[TupleRow]:
        """Run one statement; a hot one prepared, from its first use on this connection.

        psycopg prepares a statement at its fifth use, and then in a round trip of its own: a
        fresh worker would parse and plan its commit statement five times, then wait once more.
        Here the first use sends the statement's Parse with its Bind and Execute, pipelined,
        in one round trip, and every later use skips parsing and planning. A connection behind
        a transaction pooler prepares nothing (``prepare_threshold=None``).
        """
        if not hot or self.transaction_pooled:
            return await conn.execute(sql, params)
        prepared = _PREPARED.setdefault(conn, set())
        if sql in prepared:
            return await conn.execute(sql, params, prepare=True)
        async with conn.pipeline():
            cur = await conn.execute(sql, params, prepare=True)
        prepared.add(sql)  # (had psycopg's cache dropped it, it would prepare it again)
        return cur

    async def _read(self, sql: str, params: Params) -> list[Row]:
        async with self._connection() as conn:
            cur = await self._execute(conn, sql, params, hot=self._hot(sql))
            return await cur.fetchall()

    async def _write(self, sql: str, params: Params) -> Written:
        """One statement, so one round trip and its own transaction (autocommit)."""
        async with self._connection() as conn:
            cur = await self._execute(conn, sql, params, hot=self._hot(sql))
            return Written(await _rows(cur), cur.rowcount)

    @asynccontextmanager
    async def _migrating(self) -> AsyncIterator[Execute]:
        async with self._connection() as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s), hashtext(coalesce(current_schema(), '')))",
                (_MIGRATION_LOCK,),
            )

            async def execute(sql: str, params: Params | None) -> list[Row]:
                return await _rows(await conn.execute(sql, params))

            yield execute

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Execute]:
        async with self._connection() as conn, conn.transaction():

            async def execute(sql: str, params: Params | None) -> list[Row]:
                return await _rows(await conn.execute(sql, params))

            yield execute

    async def _catalog(self) -> tuple[str, frozenset[str]]:
        """The schema a connection writes into and its tables; one round trip."""
        ((schema, tables),) = await self._read(_CATALOG, {})
        if schema is None:
            raise ConfigError(
                f"no schema to use in PostgreSQL database {self._target}: the search_path names "
                "none that exists",
                hint="create it (CREATE SCHEMA name) or name an existing one in the URL "
                "(options=-csearch_path%3Dname)",
            )
        return f"PostgreSQL schema {schema} of {self._target}", frozenset(tables)

    # -- runs -------------------------------------------------------------------------------------

    async def create_run(
        self,
        run: Run,
        entries: Sequence[PackedEntry],
        *,
        outbox: Sequence[Event] = (),
        processed: Processed | None = None,
        audit: AuditNote | None = None,
    ) -> Run:
        params = (
            run_params(run)
            | _append_params(entries, run.created_at)
            | _anchor_params(self._anchor(run.id, entries, audit))
            | {"now": run.created_at}
        )
        outbox_rows = self._outbox_rows(run.id, outbox, run.created_at)
        async with self._connection() as conn:
            try:
                if not outbox_rows and processed is None:
                    await self._execute(conn, _CREATE, params)
                else:  # with its events and inbox row: one transaction of a few statements
                    async with conn.transaction():
                        await conn.execute(_CREATE, params)
                        await self._write_outbox(conn, outbox_rows)
                        if processed is not None:
                            await conn.execute(
                                self.sql.insert_inbox,
                                self._inbox_params(processed, run.id, run.created_at),
                            )
            except psycopg.errors.UniqueViolation as exc:
                raise RunExists(f"run {run.id} exists already: {_first_line(exc)}") from None
        return run

    async def _write_outbox(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
        """The outbox rows of a commit, in its transaction (a no-op without events)."""
        if rows:
            async with conn.cursor() as cur:
                await cur.executemany(self.sql.insert_outbox, rows)

    async def _journal_entries(self, run_id: str, sql: str, params: Params) -> list[Entry]:
        """One round trip: the entries with their blobs joined in."""
        async with self._connection() as conn:
            cur = await self._execute(conn, sql, params)
            rows = await cur.fetchall()
        blobs: dict[str, bytes] = {}
        for row in rows:
            address = blob_reference(row[2])
            if address is not None and row[5] is not None:
                blobs[address] = bytes(row[5])
        return entries_from_rows(run_id, [row[:5] for row in rows], blobs)

    # -- commits ----------------------------------------------------------------------------------

    def _commit_params(
        self,
        run_id: str,
        expected_version: int,
        fence: int | None,
        entries: Sequence[PackedEntry],
        changes: RunChanges,
        now: float,
    ) -> dict[str, Any]:
        params = super()._commit_params(run_id, expected_version, fence, entries, changes, now)
        params.update(_append_params(entries, now))
        return params

    async def _append_record(self, make: Callable[[int, str], Anchor]) -> int:
        async with self._connection() as conn, conn.transaction():
            cur = await conn.execute("SELECT pos, hash FROM audit_head FOR UPDATE")
            row = await cur.fetchone()
            assert row is not None  # the migration writes the one row
            anchor = make(int(row[0]), str(row[1]))
            pos = int(row[0]) + 1
            chained = record_hash(str(row[1]), pos, anchor.kind, anchor.digest)
            await conn.execute(
                "INSERT INTO audit_log (pos, kind, run_id, body, hash, created_at) "
                "VALUES (%s, %s, %s, %s, %s, extract(epoch FROM now()))",
                (pos, anchor.kind, anchor.run_id, anchor.body, bytes.fromhex(chained)),
            )
            await conn.execute("UPDATE audit_head SET pos = %s, hash = %s", (pos, chained))
        return pos

    def _flush_soon(self) -> None:
        """Start the flusher unless it runs: it sends what queued while its last group was out."""
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_groups())

    async def _flush_groups(self) -> None:
        while self._queue:
            group, self._queue = self._queue, []
            try:
                # Approvals and outbox events need their own transaction (see
                # ``_commit_alone``), so they go alone.
                alone = [r for r in group if r.approvals or r.outbox]
                together = [r for r in group if not (r.approvals or r.outbox)]
                for request in alone:
                    await self._commit_alone(request)
                if len(together) == 1:
                    await self._commit_alone(together[0])
                elif together:
                    await self._commit_together(together)
            except BaseException as exc:  # e.g. the store is unavailable: tell every waiter
                for request in group:
                    request.settle(
                        exc if isinstance(exc, Exception) else StoreUnavailable(str(exc))
                    )
                if not isinstance(exc, Exception):
                    raise

    async def _commit_alone(self, request: CommitRequest) -> None:
        try:
            await self._commit_alone_or_raise(request)
        except (JournalConflict, ApprovalConflict) as exc:
            request.settle(exc)

    async def _commit_alone_or_raise(self, request: CommitRequest) -> None:
        """The commit statement alone; with its approvals, in one transaction with their writes.

        Approvals are statements of their own that must land with the commit or not at all, and a
        group's transaction would take the whole group down with a conflicting approval.
        """
        async with self._connection() as conn:
            if request.approvals or request.outbox:
                async with conn.transaction():
                    row = await self._commit_statement(conn, request)
                    if row[0] is not None:
                        for approval in request.approvals:
                            cur = await conn.execute(*self._approval_write(approval, request.now))
                            self._approval_written(approval, cur.rowcount)
                        await self._write_outbox(conn, request.outbox)
            else:
                row = await self._commit_statement(conn, request)
            outcome = await self._outcome(conn, request, row)
        request.settle(outcome)

    async def _commit_together(self, group: list[CommitRequest]) -> None:
        group.sort(key=lambda r: r.run_id)  # one lock order for every group: no deadlocks
        try:
            async with self._connection() as conn, conn.transaction():
                async with conn.pipeline():
                    cursors = [
                        await conn.execute(_COMMIT, _with_anchor(r), prepare=True) for r in group
                    ]
                outcomes: list[int | Exception] = []
                for request, cursor in zip(group, cursors, strict=True):
                    row = await cursor.fetchone()
                    assert row is not None  # the final SELECT always yields one row
                    outcomes.append(await self._outcome(conn, request, row))
        except psycopg.Error:
            # One statement failed (a duplicate seq, say) and took the transaction with it:
            # nothing of the group landed. Send each alone to learn which one it was.
            for request in group:
                await self._commit_alone(request)
            return
        for request, outcome in zip(group, outcomes, strict=True):
            request.settle(outcome)

    async def _outcome(self, conn: Connection, request: CommitRequest, row: Row) -> int | Exception:
        """The new version, or the error that says why the guarded update matched no row."""
        version, current_version, current_fence = row
        if version is not None:
            return int(version)
        if current_version is None:
            return self._refusal(request, None)
        if self._admits(request, current_version, current_fence):
            # The snapshot saw a row the update should have matched: another writer changed
            # it while this statement waited for the row lock. Look again, now that it is done.
            cur = await conn.execute(self.sql.run_version, {"run_id": request.run_id})
            return self._refusal(request, await cur.fetchone())
        return self._refusal(request, (current_version, current_fence))

    async def _commit_statement(self, conn: Connection, request: CommitRequest) -> Row:
        try:
            cur = await self._execute(conn, _COMMIT, _with_anchor(request))
        except psycopg.errors.UniqueViolation as exc:
            raise JournalConflict(
                f"run {request.run_id}: refused, nothing written: {_first_line(exc)}"
            ) from None
        row = await cur.fetchone()
        assert row is not None  # the final SELECT always yields one row
        return row

    async def close(self) -> None:
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()


async def _read_only(conn: Connection) -> None:
    """Make a new pooled connection's transactions read-only (the pool's ``configure``)."""
    await conn.execute("SET default_transaction_read_only = on")


async def _read_only_transactions(conn: Connection) -> None:
    """Behind a transaction pooler, where a session setting would leak to other clients of the
    server session and be missing from the next: psycopg begins every transaction of this
    connection ``READ ONLY`` (a client-side setting), and ``_connection`` runs every use of it
    in a transaction."""
    await conn.set_read_only(True)


def _split_pooler(url: str) -> tuple[str, str | None]:
    """``url`` without autonomic's ``pooler`` parameter (libpq refuses parameters it does not
    know), and that parameter's value."""
    base, sep, query = url.partition("?")
    if not sep:
        return url, None
    kept: list[str] = []
    pooler: str | None = None
    for item in query.split("&"):
        key, _, value = item.partition("=")
        if unquote(key) == _POOLER:
            pooler = unquote(value).lower()
        elif item:
            kept.append(item)
    return (f"{base}?{'&'.join(kept)}" if kept else base), pooler


async def _rows(cur: psycopg.AsyncCursor[TupleRow]) -> list[Row]:
    """The rows of the statement just run, ``[]`` if it returns none."""
    return await cur.fetchall() if cur.description is not None else []


def _append_params(entries: Sequence[PackedEntry], blob_at: float) -> dict[str, Any]:
    """Column arrays for the journal and blob inserts of ``_APPEND``."""
    journal = journal_rows(entries)
    blobs = {address: (data, size) for address, data, size, _ in blob_rows(entries, blob_at)}
    return {  # typed, so each is dumped as its type at once (``pg_arrays.py``)
        "blob_at": blob_at,
        "b_address": TextArray(blobs),
        "b_data": ByteaArray([data for data, _ in blobs.values()]),
        "b_size": BigintArray([size for _, size in blobs.values()]),
        "j_run_id": TextArray([r[0] for r in journal]),
        "j_seq": BigintArray([r[1] for r in journal]),
        "j_kind": TextArray([r[2] for r in journal]),
        "j_payload": TextArray([r[3] for r in journal]),
        "j_hash": ByteaArray([r[4] for r in journal]),
        "j_created_at": Float8Array([r[5] for r in journal]),
    }


def _anchor_params(anchor: Anchor | None) -> dict[str, Any]:
    """The parameters of ``_ANCHOR``: no digest means no record."""
    if anchor is None:
        return {"anchor_kind": None, "anchor_run": None, "anchor_body": None, "anchor_digest": None}
    return {
        "anchor_kind": anchor.kind,
        "anchor_run": anchor.run_id,
        "anchor_body": anchor.body,
        "anchor_digest": anchor.digest,
    }


def _with_anchor(request: CommitRequest) -> dict[str, Any]:
    """The commit statement's parameters with its audit anchor's."""
    return request.params | _anchor_params(request.anchor)


def _url_passwords(url: str) -> set[str]:
    """The password of ``url`` as written and percent-decoded, to keep it out of messages."""
    rest = url.partition("://")[2]
    found: set[str] = set()
    for creds in (
        rest.split("/", 1)[0].split("?", 1)[0].rpartition("@")[0],
        rest.rpartition("@")[0],
    ):
        password = creds.partition(":")[2]
        if password:
            found.update({password, unquote(password)})
    return found


def _is_disconnect(exc: psycopg.OperationalError) -> bool:
    """Whether an operational error means the server is unreachable (not a query's failure)."""
    state = exc.sqlstate
    return state is None or state.startswith("08") or state in {"57P01", "57P02", "57P03", "53300"}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
