"""What the SQL stores share: every statement the dialects agree on, and the decisions around them.

``SqlStore`` implements the store port once for SQLite and PostgreSQL. A dialect (``SQLiteStore``,
``PostgresStore``) keeps only what really differs between the two databases:

* how a statement reaches the database: three small seams, ``_read`` (one read statement),
  ``_write`` (one write statement in a transaction of its own) and ``_migrating`` (the migration
  transaction, holding the schema's migration lock). SQLite runs them synchronously on the loop's
  thread; PostgreSQL awaits a pooled connection;
* the commit path, the hot path: SQLite groups the commits of one turn of the event loop into one
  ``BEGIN IMMEDIATE`` transaction, a savepoint each; PostgreSQL sends each commit as one ``WITH``
  statement and pipelines the commits that queue while one is in flight. ``commit`` itself (queue,
  then wait until durable) is here; the dialect's ``_flush_soon`` decides when the queue is written;
* ``create_run`` and reading the journal (``_journal_entries``: the statement, written here once
  for every page shape, selects the dialect's ``journal_select`` from the page), which SQLite
  does in several cheap statements and PostgreSQL in one round trip;
* driver errors, translated into the port's (a caller never sees ``sqlite3`` or ``psycopg``), and
  the URL.

Shared here, so that the two cannot drift apart: the reads, the claim, lease renewal and release;
the commit's parameters and its guard (the optimistic-locking and fencing condition, in SQL and in
Python); why a refused commit was refused (``NotFound``, ``LeaseLost`` or ``StaleVersion``); the
versioning of approvals (insert at version 1, otherwise replace only the row still at
``version - 1``, ``ApprovalConflict`` unless exactly one row changed); and the migration runner.

Statements are written once in neutral SQL with ``:name`` parameters (``CAST(:x AS TEXT) IS NULL``
for an optional filter, since PostgreSQL must know a parameter's type and SQLite accepts the cast)
and translated to the dialect's placeholder style once, when the dialect's class is defined: not on
every call, which matters on the commit path.
"""

from __future__ import annotations

import abc
import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, NamedTuple

from autonomic.adapters.store import migrations
from autonomic.adapters.store.rows import RUN_COLUMNS, redact_url, run_from_row, run_to_row
from autonomic.adapters.store.schema import MIGRATION_COLUMNS, OUR_TABLES, Contents, Purpose
from autonomic.core.approval import Approval, ApprovalStatus
from autonomic.core.audit import (
    AuditAct,
    AuditNote,
    act_body,
    anchor_body,
    body_digest,
    record_digest,
)
from autonomic.core.canonical import canonical_json
from autonomic.core.entries import ModelCall
from autonomic.core.envelope import decode, structured
from autonomic.core.events import Event
from autonomic.core.journal import Entry, EntryKind, PackedEntry, blob_reference
from autonomic.core.run import Run, RunChanges, RunStatus
from autonomic.core.timeline import SPENDING, calls_in
from autonomic.errors import (
    ApprovalConflict,
    ConfigError,
    LeaseLost,
    NotFound,
    StaleVersion,
    StoreDamaged,
    StoreUnavailable,
)
from autonomic.ports.store import (
    AuditRow,
    Claim,
    JournalRow,
    OutboxItem,
    Processed,
    Store,
    Waiting,
    check_journal_page,
)

Row = tuple[Any, ...]
Params = Mapping[str, Any]
Paramstyle = Literal["named", "pyformat"]
"""The DB-API names: ``:name`` (sqlite3) and ``%(name)s`` (psycopg)."""

Execute = Callable[[str, Params | None], Awaitable[list[Row]]]
"""Runs one statement (or, without parameters, one script) inside a transaction; returns its rows."""

_PARAMETER = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")  # ``:name``, but not the ``::type`` of a cast


def translate(sql: str, paramstyle: Paramstyle) -> str:
    """Neutral SQL (``:name`` parameters) in the placeholder style of a driver.

    Meant for the statements of this package, written with that in mind: a ``:name`` inside a
    string literal would be taken for a parameter too.
    """
    if paramstyle == "named":
        return sql
    return _PARAMETER.sub(r"%(\1)s", sql.replace("%", "%%"))


RUN_NAMES = tuple(c.strip() for c in RUN_COLUMNS.split(","))


def run_params(run: Run) -> dict[str, Any]:
    """The parameters of ``Statements.insert_run``: one per column, named after it."""
    return dict(zip(RUN_NAMES, run_to_row(run), strict=True))


COMMIT_GUARD = (
    "id = :run_id AND (:check_version = 0 OR version = :expected_version) "
    "AND (CAST(:fence AS BIGINT) IS NULL OR fence = :fence)"
)
"""Which row a commit may change: the run at the version it read, under the lease it holds (none
for ``fence=None``). ``SqlStore._admits`` is the same condition in Python."""


def _bigint(n: int) -> int:
    """``n`` within a 64-bit integer, what both databases store and compare (a bound past it
    means the same: no seq is that large)."""
    return max(-(2**63), min(n, 2**63 - 1))


class Statements:
    """Every statement both dialects run as it is.

    Written here once, as class attributes in neutral SQL; an instance holds them translated into
    one dialect's placeholder style, with the dialect's row lock in the claim.
    """

    insert_run = (
        f"INSERT INTO runs ({RUN_COLUMNS}) VALUES ({', '.join(f':{c}' for c in RUN_NAMES)})"
    )
    get_run = f"SELECT {RUN_COLUMNS} FROM runs WHERE id = :run_id"
    list_runs = (
        f"SELECT {RUN_COLUMNS} FROM runs "
        "WHERE (CAST(:status AS TEXT) IS NULL OR status = :status) "
        "AND (CAST(:tenant AS TEXT) IS NULL OR tenant = :tenant) "
        "ORDER BY created_at DESC LIMIT :limit"
    )
    page_runs = (
        f"SELECT {RUN_COLUMNS} FROM runs "
        "WHERE (CAST(:tenant AS TEXT) IS NULL OR tenant = :tenant) "
        "AND (CAST(:status AS TEXT) IS NULL OR status = :status) "
        "AND (CAST(:agent AS TEXT) IS NULL OR agent = :agent) "
        "AND (CAST(:since AS DOUBLE PRECISION) IS NULL OR created_at >= :since) "
        "AND (CAST(:before_at AS DOUBLE PRECISION) IS NULL OR created_at < :before_at "
        "OR (created_at = :before_at AND id < :before_id)) "
        "ORDER BY created_at DESC, id DESC LIMIT :limit"
    )
    run_version = "SELECT version, fence FROM runs WHERE id = :run_id"
    # One statement: the run is chosen and leased together. ``{claim_lock}`` is where PostgreSQL
    # skips rows another claimer holds; SQLite's writers are serialised, so it needs nothing.
    claim = f"""UPDATE runs
SET lease_owner = :owner, lease_expires_at = :expires_at, fence = fence + 1
WHERE id = (
    SELECT id FROM runs
    WHERE status IN ('PENDING', 'RUNNING')
      AND (lease_expires_at < :now
           OR (CAST(:steal_from AS TEXT) IS NOT NULL AND lease_owner = :steal_from))
      AND (CAST(:run_id AS TEXT) IS NULL OR id = :run_id)
      AND (CAST(:tenant AS TEXT) IS NULL OR tenant = :tenant)
      AND queued = 0
    ORDER BY created_at
    LIMIT 1
    {{claim_lock}}
)
RETURNING {RUN_COLUMNS}"""
    children = (
        f"SELECT {RUN_COLUMNS} FROM runs WHERE parent_run_id = :run_id ORDER BY created_at, id"
    )
    # Parents waiting for children some of which have an outcome, with the parent's version and
    # how many of its children have one: what a worker's sweep may reopen. A parent waits for
    # several children at once after a fan-out and records every end it saw before waiting, so
    # the delegation checks each exactly, and skips a parent whose (version, count) it has
    # checked already: the sweep stays one query while nothing changed.
    parents_to_resume = """SELECT p.id, p.version, COUNT(c.id) FROM runs p
JOIN runs c ON c.parent_run_id = p.id
WHERE p.status = 'WAITING_FOR_CHILD'
  AND c.status IN ('COMPLETED', 'FAILED', 'CANCELLED', 'SUSPENDED')
GROUP BY p.id, p.version, p.updated_at
ORDER BY p.updated_at LIMIT :limit"""
    # Admission to a capability's fleet-wide concurrency limit: the oldest queued children get the
    # slots the children in flight (admitted and not ended, not suspended) leave free. Run under
    # the dialect's capacity lock (SQLite: the write lock), so two admitters never both see a
    # slot free. ``CASE``: a negative LIMIT means "no limit" to SQLite.
    admit = """UPDATE runs SET queued = 0
WHERE id IN (
    SELECT id FROM runs
    WHERE capability = :capability AND queued = 1 AND status = 'PENDING'
    ORDER BY created_at, id
    LIMIT (SELECT CASE WHEN n < :capacity THEN :capacity - n ELSE 0 END FROM (
        SELECT COUNT(*) AS n FROM runs
        WHERE capability = :capability AND queued = 0
          AND status IN ('PENDING', 'RUNNING', 'WAITING_FOR_HUMAN', 'WAITING_FOR_CHILD')
    ) AS in_flight)
)"""
    announce_agent = (
        "INSERT INTO worker_agents (owner, agent, agent_version, seen_at) "
        "VALUES (:owner, :agent, :agent_version, :now) "
        "ON CONFLICT (agent, agent_version, owner) DO UPDATE SET seen_at = :now"
    )
    forget_agents = "DELETE FROM worker_agents WHERE seen_at < :before"
    # A runnable run waits since its last change or since its lease expired, whichever is later.
    unserved_runs = f"""SELECT {RUN_COLUMNS} FROM runs r
WHERE (r.status = 'PENDING' OR (r.status = 'RUNNING' AND r.lease_expires_at < :now))
  AND r.updated_at < :since AND r.lease_expires_at < :since
  AND NOT EXISTS (
    SELECT 1 FROM worker_agents w
    WHERE w.agent = r.agent AND w.agent_version = r.agent_version AND w.seen_at >= :since
  )
ORDER BY r.created_at
LIMIT :limit"""
    renew_lease = (
        "UPDATE runs SET lease_expires_at = :expires_at "
        "WHERE id = :run_id AND fence = :fence AND lease_owner = :owner"
    )
    release_lease = (
        "UPDATE runs SET lease_owner = NULL, lease_expires_at = 0 "
        "WHERE id = :run_id AND fence = :fence AND lease_owner = :owner"
    )
    insert_approval = (
        "INSERT INTO approvals (id, run_id, tenant, status, version, body, created_at, updated_at) "
        "VALUES (:id, :run_id, :tenant, :status, 1, :body, :created_at, :now) "
        "ON CONFLICT (id) DO NOTHING"
    )
    update_approval = (
        "UPDATE approvals SET status = :status, version = :version, body = :body, updated_at = :now "
        "WHERE id = :id AND version = :version - 1"
    )
    get_approval = "SELECT body FROM approvals WHERE id = :id"
    list_approvals = (
        "SELECT body FROM approvals "
        "WHERE (CAST(:status AS TEXT) IS NULL OR status = :status) "
        "AND (CAST(:tenant AS TEXT) IS NULL OR tenant = :tenant) "
        "AND (CAST(:run_id AS TEXT) IS NULL OR run_id = :run_id) "
        "ORDER BY created_at, id LIMIT :limit"
    )
    insert_outbox = (
        "INSERT INTO outbox (event_id, run_id, envelope, created_at) "
        "VALUES (:event_id, :run_id, :envelope, :now) ON CONFLICT (event_id) DO NOTHING"
    )
    outbox_pending = (
        "SELECT seq, envelope FROM outbox WHERE sent_at IS NULL ORDER BY seq LIMIT :limit"
    )
    outbox_backlog = "SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL"
    insert_inbox = (
        "INSERT INTO inbox (grp, event_id, run_id, processed_at) "
        "VALUES (:grp, :event_id, :run_id, :now)"
    )
    was_processed = "SELECT 1 FROM inbox WHERE grp = :grp AND event_id = :event_id"
    # ``{hash_hex}``: the hash as hex, however it is stored (``SqlStore.hash_hex``)
    audit_scan = (
        "SELECT pos, kind, run_id, body, {hash_hex}, created_at FROM audit_log "
        "WHERE pos > :after ORDER BY pos LIMIT :limit"
    )
    model_calls = (
        "SELECT seq, kind, payload FROM journal WHERE run_id = :run_id "
        f"AND kind IN ({', '.join(repr(str(k.value)) for k in sorted(SPENDING))}) ORDER BY seq"
    )
    journal_scan = (
        "SELECT run_id, seq, kind, payload, {hash_hex} FROM journal "
        "WHERE (run_id, seq) > (:after_run, :after_seq) "
        "AND (CAST(:run_id AS TEXT) IS NULL OR run_id = :run_id) "
        "ORDER BY run_id, seq LIMIT :limit"
    )
    run_scan = "SELECT id, created_at FROM runs WHERE id > :after ORDER BY id LIMIT :limit"
    blob_scan = (
        "SELECT address, data FROM blobs WHERE address > :after ORDER BY address LIMIT :limit"
    )
    applied_migrations = "SELECT version FROM schema_migrations"
    recorded_migrations = "SELECT version, name FROM schema_migrations"
    record_migration = (
        "INSERT INTO schema_migrations (version, name, applied_at) "
        "VALUES (:version, :name, :applied_at)"
    )

    def __init__(self, paramstyle: Paramstyle, *, claim_lock: str, hash_hex: str) -> None:
        for name, neutral in vars(Statements).items():
            if isinstance(neutral, str) and not name.startswith("__"):
                sql = neutral.replace("{claim_lock}", claim_lock).replace("{hash_hex}", hash_hex)
                setattr(self, name, translate(sql, paramstyle))


class Written(NamedTuple):
    """What one write statement did: the rows it returned and how many rows it changed."""

    rows: list[Row]
    rowcount: int


class Anchor(NamedTuple):
    """An audit record about to be appended: its body and the body's digest (hex)."""

    kind: str
    run_id: str | None
    body: str
    digest: str


@dataclass(frozen=True, slots=True)
class CommitRequest:
    """One queued ``commit``: its arguments, its statement parameters, and the caller's future."""

    run_id: str
    expected_version: int
    fence: int | None
    entries: Sequence[PackedEntry]
    changes: RunChanges
    now: float
    approvals: tuple[Approval, ...]
    params: dict[str, Any]
    done: asyncio.Future[int]
    anchor: Anchor | None = None
    """The audit log record this commit appends (``SqlStore._anchor``)."""
    outbox: tuple[dict[str, Any], ...] = ()
    """The outbox rows' parameters (``SqlStore._outbox_rows``), written with the commit."""

    def settle(self, outcome: int | Exception) -> None:
        """Hand the caller its new version or its error."""
        if self.done.done():  # the caller was cancelled; what landed, landed
            return
        if isinstance(outcome, Exception):
            self.done.set_exception(outcome)
        else:
            self.done.set_result(outcome)


class SqlStore(Store):
    """The store port over a SQL database; a dialect subclass says how to reach it.

    A subclass sets the class attributes below and implements the seams and the commit path; see
    the module docstring for the split.
    """

    dialect: ClassVar[str]
    """The folder of its migrations: ``migrations/<dialect>``."""
    paramstyle: ClassVar[Paramstyle]
    """How its driver writes a parameter; the shared statements are translated into it."""
    claim_lock: ClassVar[str] = ""
    """Appended to the claim's choice of run (PostgreSQL: ``FOR UPDATE SKIP LOCKED``)."""
    hash_hex: ClassVar[str] = "hash"
    """The column a scan selects for a stored hash, as hex text: the chain hashes are kept as
    their 32 raw bytes since issue 17 (``rows.journal_rows``), hex text before, and every
    reader gets hex. Converted where it costs ``verify`` least per row: PostgreSQL's
    ``encode()`` on the server, SQLite's in a ``sqlite3`` converter (``_hash_column``); never
    by a pass in Python that builds every row again."""
    capacity_lock: ClassVar[str | None] = None
    """The statement that serialises admissions to one capability inside a transaction
    (PostgreSQL: an advisory lock on its name); ``None`` when every write transaction is
    serialised already (SQLite's write lock)."""
    migrations_table: ClassVar[str]
    """``CREATE TABLE IF NOT EXISTS schema_migrations`` in the dialect's column types."""
    migration_columns: ClassVar[str]
    """The names of the columns of the ``schema_migrations`` table, one a row."""
    listen_url: str | None = None
    """Where the embedded bus may ``LISTEN`` for publishes (PostgreSQL, not behind a transaction
    pooler); ``None``: its consumers poll."""
    sql: ClassVar[Statements]
    _claims: ClassVar[dict[int, str]]
    """The claims restricted to N agent versions, by N (``_claim_of``)."""
    """The shared statements in this dialect's placeholder style, made when the class is defined."""
    journal_select: ClassVar[str]
    """The columns of a journal read, of the page ``j``: what ``_journal_entries`` turns into
    entries (the dialect decides how blobs are resolved)."""
    journal_join: ClassVar[str] = ""
    """What is joined to the page ``j`` (PostgreSQL: its blobs)."""
    _journal_pages: ClassVar[dict[tuple[bool, bool, bool, int], str]]
    """The journal reads by shape (``_journal_page_sql``)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if hasattr(cls, "paramstyle"):  # a dialect, not an abstract layer in between
            cls.sql = Statements(cls.paramstyle, claim_lock=cls.claim_lock, hash_hex=cls.hash_hex)
            cls._claims = {}
            cls._journal_pages = {}

    def __init__(self) -> None:
        self._check_version = True  # only the lost-update test turns this off
        self._anchoring = True  # only the audit benchmark turns this off, to measure its cost
        self._queue: list[CommitRequest] = []

    # -- the seams ------------------------------------------------------------------------------

    @abc.abstractmethod
    async def _read(self, sql: str, params: Params) -> list[Row]:
        """Run one read statement; its rows."""

    @abc.abstractmethod
    async def _write(self, sql: str, params: Params) -> Written:
        """Run one write statement as a transaction of its own."""

    @abc.abstractmethod
    def _migrating(self) -> AbstractAsyncContextManager[Execute]:
        """The migration transaction: holds the schema's migration lock until it ends, so that
        concurrent migrators take turns; yields how to run a statement in it."""

    @abc.abstractmethod
    def _transaction(self) -> AbstractAsyncContextManager[Execute]:
        """A transaction of several statements (no migration lock): commits when the block ends,
        rolls back on an error; yields how to run a statement in it."""

    def transaction(self) -> AbstractAsyncContextManager[Execute]:
        """A transaction of several statements, for what lives in this database beside the runs
        (the embedded event bus, the outbox relay). Statements are neutral SQL translated into
        this dialect with ``translate(sql, self.paramstyle)``; nothing else may be awaited
        inside the block (SQLite holds its write lock on the event loop's thread)."""
        return self._transaction()

    async def query(self, sql: str, params: Params) -> list[Row]:
        """One read statement (translated with ``translate``); its rows."""
        return await self._read(sql, params)

    def _script(self, script: str) -> list[str]:
        """A migration file as the statements to send (by default, the file as one script)."""
        return [script]

    @abc.abstractmethod
    def _flush_soon(self) -> None:
        """Make sure the queued commits (``self._queue``) will be written and settled."""

    @abc.abstractmethod
    async def _catalog(self) -> tuple[str, frozenset[str]]:
        """The database as a message names it, and the names of its tables and views."""

    def _reached(self) -> bool:
        """Whether the database has answered at all (a server that never did is not asked
        twice); an embedded file always has."""
        return True

    async def _check_integrity(self) -> None:
        """Raise ``StoreDamaged`` if the database is damaged; before the first write."""

    async def _start_writing(self) -> None:
        """Settings a writer needs, made once the database has been found to be its own."""

    # -- schema (see ``schema.py``) -----------------------------------------------------------------

    async def verify(self) -> None:
        """Refuse, reading only, a database that is not a current autonomic schema.

        One cheap read first (``_is_current``): a worker opening a current schema pays one round
        trip; anything else gets the full look (``_contents``) and its precise refusal.
        """
        if await self._is_current():
            return
        self._refuse(Purpose.USE, *await self._contents())

    async def _is_current(self) -> bool:
        """Whether the migration record is exactly this code's migrations, read in one statement.

        The names must match too, not only the versions: another tool's ``schema_migrations``
        does not pass by accident. Any failure (no such table, another shape) means "look
        properly", never an error of its own.
        """
        try:
            rows = await self._read(self.sql.recorded_migrations, {})
        except Exception as exc:  # the full look (``_contents``) says what is wrong ...
            if isinstance(exc, StoreDamaged) or not self._reached():
                raise  # ... unless it could not look at all: no second wait
            return False
        return {(int(v), str(n)) for v, n in rows} == migrations.recorded(self.dialect)

    async def migrate(self, *, beside_other_tables: bool = False) -> list[str]:
        """Create or upgrade autonomic's schema; refuse a damaged, newer or foreign database.

        A database holding other tables is refused unless ``beside_other_tables`` (what
        ``autonomic migrate`` asks for): adding tables to another application's database is
        done on purpose or not at all. Nothing is written before these checks pass.
        """
        await self._check_integrity()
        if await self._is_current():  # the common case, a worker starting: one cheap read
            await self._start_writing()
            return []
        self._refuse(
            Purpose.ADOPT if beside_other_tables else Purpose.CREATE, *await self._contents()
        )
        await self._start_writing()
        applied: list[str] = []
        async with self._migrating() as execute:
            await execute(self.migrations_table, None)
            done = {int(row[0]) for row in await execute(self.sql.applied_migrations, None)}
            for m in migrations.load(self.dialect):
                if m.version in done:
                    continue
                for statement in self._script(m.sql):
                    await execute(statement, None)  # no parameters: sent as it is
                await execute(
                    self.sql.record_migration,
                    {"version": m.version, "name": m.name, "applied_at": time.time()},
                )
                applied.append(f"{m.version:04d}_{m.name}")
        return applied

    async def _contents(self) -> tuple[str, Contents]:
        """What the database holds (see ``schema.py``), read without writing; and its name."""
        where, tables = await self._catalog()
        if not tables >= OUR_TABLES:
            return where, Contents(tables, frozenset(), "schema_migrations" in tables)
        columns = {str(row[0]) for row in await self._read(self.migration_columns, {})}
        if not columns >= MIGRATION_COLUMNS:
            return where, Contents(tables, frozenset(), foreign_migrations=True)
        recorded = {(int(v), str(n)) for v, n in await self._read(self.sql.recorded_migrations, {})}
        if (1, "initial") not in recorded:
            return where, Contents(tables, frozenset(), foreign_migrations=True)
        return where, Contents(tables, frozenset(v for v, _ in recorded))

    def _refuse(self, purpose: Purpose, where: str, contents: Contents) -> None:
        known = max(m.version for m in migrations.load(self.dialect))
        refused = contents.refusal(purpose, where=where, url=redact_url(self.url), known=known)
        if refused is not None:
            raise refused

    # -- runs -----------------------------------------------------------------------------------

    async def get_run(self, run_id: str) -> Run:
        rows = await self._read(self.sql.get_run, {"run_id": run_id})
        if not rows:
            raise NotFound(
                f"no run {run_id}", hint="`autonomic runs` lists the runs in this database"
            )
        return run_from_row(rows[0])

    async def list_runs(
        self, *, status: RunStatus | None = None, tenant: str | None = None, limit: int = 50
    ) -> list[Run]:
        params = {"status": status.value if status else None, "tenant": tenant, "limit": limit}
        return [run_from_row(r) for r in await self._read(self.sql.list_runs, params)]

    async def page_runs(
        self,
        *,
        tenant: str | None,
        status: RunStatus | None = None,
        agent: str | None = None,
        since: float | None = None,
        before: tuple[float, str] | None = None,
        limit: int = 50,
    ) -> list[Run]:
        params = {
            "tenant": tenant,
            "status": status.value if status else None,
            "agent": agent,
            "since": since,
            "before_at": before[0] if before else None,
            "before_id": before[1] if before else "",
            "limit": limit,
        }
        return [run_from_row(r) for r in await self._read(self.sql.page_runs, params)]

    # -- the journal ----------------------------------------------------------------------------

    async def load_journal(self, run_id: str, *, after_seq: int = 0) -> list[Entry]:
        sql = self._journal_page_sql(False, False, False, 0)
        params = {"run_id": run_id, "after_seq": _bigint(after_seq)}
        return await self._journal_entries(run_id, sql, params)

    async def page_journal(
        self,
        run_id: str,
        *,
        after_seq: int = 0,
        before_seq: int | None = None,
        limit: int | None = None,
        newest: bool = False,
        kinds: Collection[EntryKind] | None = None,
    ) -> list[Entry]:
        """One indexed range read of ``(run_id, seq)``: only the rows asked for are read and
        decoded (see ``Store.page_journal``)."""
        check_journal_page(limit, kinds)
        if limit == 0:
            return []
        wanted = sorted({k.value for k in kinds}) if kinds is not None else []
        sql = self._journal_page_sql(before_seq is not None, limit is not None, newest, len(wanted))
        params: dict[str, Any] = {"run_id": run_id, "after_seq": _bigint(after_seq)}
        if before_seq is not None:
            params["before_seq"] = _bigint(before_seq)
        if limit is not None:
            params["limit"] = _bigint(limit)
        params.update((f"kind_{i}", kind) for i, kind in enumerate(wanted))
        entries = await self._journal_entries(run_id, sql, params)
        return entries[::-1] if newest else entries

    @classmethod
    def _journal_page_sql(cls, before: bool, limit: bool, newest: bool, kinds: int) -> str:
        """The journal read of one shape (built once per shape): the run's entries after
        ``:after_seq``, before ``:before_seq``, of ``kinds`` kinds, the first or (``newest``,
        read backwards) the last ``:limit``."""
        cache = cls._journal_pages
        shape = (before, limit, newest, kinds)
        if shape not in cache:
            where = ["run_id = :run_id", "seq > :after_seq"]
            if before:
                where.append("seq < :before_seq")
            if kinds:
                where.append(f"kind IN ({', '.join(f':kind_{i}' for i in range(kinds))})")
            order = " DESC" if newest else ""
            # The page is chosen before anything is joined to it: PostgreSQL's planner, with no
            # statistics yet on a young table, otherwise joins the blobs to every entry of the
            # run and cuts after sorting (6 ms against 1.4 ms for 300 of 1,504 entries).
            page = (
                "SELECT seq, kind, payload, hash, created_at FROM journal "
                f"WHERE {' AND '.join(where)} ORDER BY seq{order}"
                f"{' LIMIT :limit' if limit else ''}"
            )
            neutral = (
                f"{cls.journal_select} FROM ({page}) j{cls.journal_join} ORDER BY j.seq{order}"
            )
            cache[shape] = translate(neutral, cls.paramstyle)
        return cache[shape]

    async def model_calls(self, run_id: str) -> list[ModelCall]:
        """One statement reads the payload text of the run's entries that carry model calls;
        of a model turn only its call is decoded (``calls_in``), not its message. A payload kept
        as a blob is read after it, resolved (a range read of those kinds).

        The payloads are parsed here, not by the database: both parse JSON slower than
        ``json.loads`` (measured on PostgreSQL: extracting the call's five fields of 500 turns
        took 8 ms, sending their text 0.9 ms)."""
        rows = await self._read(self.sql.model_calls, {"run_id": run_id})
        blobs = [int(seq) for seq, _kind, text in rows if blob_reference(text) is not None]
        resolved: dict[int, dict[str, Any]] = {}
        if blobs:
            found = await self.page_journal(
                run_id, after_seq=blobs[0] - 1, before_seq=blobs[-1] + 1, kinds=SPENDING
            )
            resolved = {e.seq: e.payload for e in found}
        calls: list[ModelCall] = []
        for seq, kind, text in rows:
            payload = resolved[seq] if seq in resolved else json.loads(text)
            calls.extend(calls_in(EntryKind(kind), payload))
        return calls

    @abc.abstractmethod
    async def _journal_entries(self, run_id: str, sql: str, params: Params) -> list[Entry]:
        """The entries ``sql`` (a ``journal_select`` with its conditions) reads, in its order,
        blob payloads resolved."""

    # -- commits --------------------------------------------------------------------------------

    async def commit(
        self,
        run_id: str,
        *,
        expected_version: int,
        fence: int | None,
        entries: Sequence[PackedEntry],
        changes: RunChanges,
        now: float,
        approvals: Sequence[Approval] = (),
        outbox: Sequence[Event] = (),
        audit: AuditNote | None = None,
    ) -> int:
        """Queue the commit and wait until it is durable.

        Queued commits are written in groups, one transaction and so one disk flush for many
        runs; how a group forms is the dialect's (``_flush_soon``). A refused commit never takes
        the others of its group down.
        """
        request = CommitRequest(
            run_id,
            expected_version,
            fence,
            entries,
            changes,
            now,
            tuple(approvals),
            self._commit_params(run_id, expected_version, fence, entries, changes, now),
            asyncio.get_running_loop().create_future(),
            self._anchor(run_id, entries, audit),
            outbox=self._outbox_rows(run_id, outbox, now),
        )
        self._queue.append(request)
        self._flush_soon()
        return await request.done

    def _commit_params(
        self,
        run_id: str,
        expected_version: int,
        fence: int | None,
        entries: Sequence[PackedEntry],
        changes: RunChanges,
        now: float,
    ) -> dict[str, Any]:
        """The parameters of the dialect's commit statement: ``COMMIT_GUARD``'s and the changes'.

        Computed when the commit is queued, so that PostgreSQL does it while a group is on its way
        to the server rather than between round trips.
        """
        return {
            "run_id": run_id,
            "now": now,
            "check_version": int(
                self._check_version
            ),  # a bool would cost sqlite3 an adapter lookup
            "expected_version": expected_version,
            "fence": fence,
            "release_lease": changes.release_lease,
            "lease_expires_at": changes.lease_expires_at,
            "status": changes.status.value if changes.status else None,
            "status_reason": changes.status_reason,
            "set_output": changes.set_output,
            "output": canonical_json(changes.output) if changes.set_output else None,
            "metadata": canonical_json(changes.metadata) if changes.metadata is not None else None,
            "agent_version": changes.agent_version,
        }

    def _anchor(
        self, run_id: str, entries: Sequence[PackedEntry], audit: AuditNote | None
    ) -> Anchor | None:
        """The audit log's anchor of a commit (``core/audit.py``): one for any commit that
        writes entries or carries an operator's act; built when the commit is queued, like its
        parameters. The dialect appends it in the commit's transaction, chained under the log's
        lock."""
        if not self._anchoring or (not entries and (audit is None or audit.act is None)):
            return None
        body = anchor_body(
            run_id,
            [(p.entry.seq, p.entry.kind.value, p.entry.hash, p.entry.payload) for p in entries],
            audit or AuditNote(),
        )
        return Anchor("anchor", run_id, body, record_digest("anchor", run_id, body))

    @staticmethod
    def _act(act: AuditAct, run_id: str | None) -> Anchor:
        body = act_body(act, run_id)
        return Anchor("act", run_id, body, body_digest(body))

    # -- the audit log (``core/audit.py``; verified by ``autonomic.audit``) -----------------------

    async def scan_audit_log(self, *, after: int = -1, limit: int = 20_000) -> list[AuditRow]:
        return await self._read(self.sql.audit_scan, {"after": after, "limit": limit})

    async def scan_journal(
        self, *, after: tuple[str, int] = ("", 0), run_id: str | None = None, limit: int = 20_000
    ) -> list[JournalRow]:
        params = {"after_run": after[0], "after_seq": after[1], "run_id": run_id, "limit": limit}
        return await self._read(self.sql.journal_scan, params)  # hashes as hex: ``hash_hex``

    async def scan_runs(self, *, after: str = "", limit: int = 20_000) -> list[tuple[str, float]]:
        rows = await self._read(self.sql.run_scan, {"after": after, "limit": limit})
        return [(str(r[0]), float(r[1])) for r in rows]

    async def scan_blobs(self, *, after: str = "", limit: int = 2_000) -> list[tuple[str, bytes]]:
        rows = await self._read(self.sql.blob_scan, {"after": after, "limit": limit})
        return [(str(r[0]), bytes(r[1])) for r in rows]

    async def append_audit(self, act: AuditAct, *, run_id: str | None = None) -> int:
        return await self._append_record(lambda _pos, _head: self._act(act, run_id))

    async def append_checkpoint(self, sign: Callable[[int, str], str]) -> int:
        def checkpoint(pos: int, head: str) -> Anchor:
            body = sign(pos, head)
            return Anchor("checkpoint", None, body, body_digest(body))

        return await self._append_record(checkpoint)

    @abc.abstractmethod
    async def _append_record(self, make: Callable[[int, str], Anchor]) -> int:
        """Append ``make(head pos, head hash)`` to the audit log in a transaction of its own,
        under the log's lock; its pos."""

    def _admits(self, request: CommitRequest, version: int, fence: int) -> bool:
        """Whether ``COMMIT_GUARD`` lets ``request`` change a run now at ``version`` and ``fence``."""
        return (request.fence is None or fence == request.fence) and (
            not self._check_version or version == request.expected_version
        )

    @staticmethod
    def _refusal(request: CommitRequest, current: Row | None) -> Exception:
        """Why ``COMMIT_GUARD`` matched no row, given the run's ``(version, fence)`` as it is now."""
        run_id = request.run_id
        if current is None:
            return NotFound(f"no run {run_id}")
        version, fence = current
        if request.fence is not None and fence != request.fence:
            return LeaseLost(f"run {run_id}: fence {request.fence} is stale (now {fence})")
        return StaleVersion(f"run {run_id}: version moved on to {version}")

    # -- the outbox and the inbox (docs/events.md) ------------------------------------------------

    @staticmethod
    def _outbox_rows(
        run_id: str | None, events: Sequence[Event], now: float
    ) -> tuple[dict[str, Any], ...]:
        """The ``insert_outbox`` parameters of the events a commit causes, written when the
        commit is queued (the structured CloudEvent; the relay reads it back through the SDK)."""
        return tuple(
            {"event_id": e.id, "run_id": run_id, "envelope": structured(e), "now": now}
            for e in events
        )

    @staticmethod
    def _inbox_params(processed: Processed, run_id: str, now: float) -> dict[str, Any]:
        return {
            "grp": processed.group,
            "event_id": processed.event_id,
            "run_id": run_id,
            "now": now,
        }

    async def outbox_pending(self, *, limit: int = 100) -> list[OutboxItem]:
        rows = await self._read(self.sql.outbox_pending, {"limit": limit})
        return [OutboxItem(int(seq), decode(envelope)) for seq, envelope in rows]

    async def outbox_backlog(self) -> int:
        rows = await self._read(self.sql.outbox_backlog, {})
        return int(rows[0][0]) if rows else 0

    async def outbox_sent(self, seqs: Sequence[int], *, now: float) -> None:
        if not seqs:
            return
        marks = ", ".join(f":s{i}" for i in range(len(seqs)))
        sql = translate(f"UPDATE outbox SET sent_at = :now WHERE seq IN ({marks})", self.paramstyle)
        await self._write(sql, {"now": now, **{f"s{i}": s for i, s in enumerate(seqs)}})

    async def was_processed(self, processed: Processed) -> bool:
        params = {"grp": processed.group, "event_id": processed.event_id}
        return bool(await self._read(self.sql.was_processed, params))

    # -- approvals ------------------------------------------------------------------------------

    def _approval_write(self, approval: Approval, now: float) -> tuple[str, dict[str, Any]]:
        """The statement storing ``approval`` within a commit's transaction, and its parameters.

        Version 1 is inserted (and must not exist yet); any later version replaces the stored row
        only while that row is still at ``version - 1``, so two deciders cannot both win. Either
        way exactly one row changes when it succeeds: hand the count to ``_approval_written``.
        """
        params = {
            "id": approval.id,
            "status": approval.status.value,
            "body": canonical_json(approval.to_dict()),
            "now": now,
        }
        if approval.version == 1:
            params.update(
                run_id=approval.run_id, tenant=approval.tenant, created_at=approval.created_at
            )
            return self.sql.insert_approval, params
        params["version"] = approval.version
        return self.sql.update_approval, params

    @staticmethod
    def _approval_written(approval: Approval, rowcount: int) -> None:
        """Refuse the whole commit unless ``_approval_write`` changed exactly one row."""
        if rowcount != 1:
            raise ApprovalConflict(
                f"approval {approval.id} changed meanwhile (or exists already); nothing written",
                hint="reload it and decide again",
            )

    async def get_approval(self, approval_id: str) -> Approval:
        rows = await self._read(self.sql.get_approval, {"id": approval_id})
        if not rows:
            raise NotFound(
                f"no approval {approval_id}", hint="`autonomic approvals` lists the pending ones"
            )
        return Approval.from_dict(json.loads(rows[0][0]))

    async def list_approvals(
        self,
        *,
        status: ApprovalStatus | None = None,
        tenant: str | None = None,
        run_id: str | None = None,
        limit: int = 100,
    ) -> list[Approval]:
        params = {
            "status": status.value if status else None,
            "tenant": tenant,
            "run_id": run_id,
            "limit": limit,
        }
        rows = await self._read(self.sql.list_approvals, params)
        return [Approval.from_dict(json.loads(r[0])) for r in rows]

    # -- leases ---------------------------------------------------------------------------------

    async def claim(self, claim: Claim) -> Run | None:
        if claim.agents is not None and not claim.agents:
            return None  # a worker with no agents drives nothing
        params: dict[str, Any] = {
            "owner": claim.owner,
            "expires_at": claim.now + claim.ttl,
            "now": claim.now,
            "steal_from": claim.steal_from,
            "run_id": claim.run_id,
            "tenant": claim.tenant,
        }
        statement = self.sql.claim
        if claim.agents is not None:
            statement = self._claim_of(len(claim.agents))
            for i, (agent, version) in enumerate(claim.agents):
                params[f"agent_{i}"] = agent
                params[f"version_{i}"] = version
        rows = (await self._write(statement, params)).rows
        return run_from_row(rows[0]) if rows else None

    async def children(self, run_id: str) -> list[Run]:
        rows = await self._read(self.sql.children, {"run_id": run_id})
        return [run_from_row(r) for r in rows]

    async def parents_to_resume(self, *, limit: int = 200) -> list[Waiting]:
        rows = await self._read(self.sql.parents_to_resume, {"limit": limit})
        return [Waiting(str(r[0]), int(r[1]), int(r[2])) for r in rows]

    async def admit(self, capability: str, capacity: int) -> int:
        """Admit queued children of ``capability`` while fewer than ``capacity`` are in flight,
        atomically across every worker of the fleet; how many were admitted."""
        params = {"capability": capability, "capacity": capacity}
        async with self._transaction() as execute:
            if self.capacity_lock is not None:
                await execute(self.capacity_lock, {"lock": f"capability:{capability}"})
            before = await execute(self._queued_count, params)
            await execute(self.sql.admit, params)
            after = await execute(self._queued_count, params)
        return int(before[0][0]) - int(after[0][0])

    @property
    def _queued_count(self) -> str:
        return translate(
            "SELECT COUNT(*) FROM runs WHERE capability = :capability AND queued = 1",
            self.paramstyle,
        )

    @classmethod
    def _claim_of(cls, count: int) -> str:
        """The claim restricted to ``count`` ``(agent, version)`` pairs (built once per count)."""
        cache = cls._claims
        if count not in cache:
            pairs = ", ".join(f"(:agent_{i}, :version_{i})" for i in range(count))
            neutral = Statements.claim.replace(
                "      AND (CAST(:tenant AS TEXT) IS NULL OR tenant = :tenant)",
                "      AND (CAST(:tenant AS TEXT) IS NULL OR tenant = :tenant)\n"
                f"      AND (agent, agent_version) IN ({pairs})",
            )
            cache[count] = translate(
                neutral.replace("{claim_lock}", cls.claim_lock), cls.paramstyle
            )
        return cache[count]

    async def announce_agents(
        self,
        owner: str,
        agents: Sequence[tuple[str, str]],
        *,
        now: float,
        forget_before: float,
    ) -> None:
        await self._write(self.sql.forget_agents, {"before": forget_before})
        for agent, version in agents:
            params = {"owner": owner, "agent": agent, "agent_version": version, "now": now}
            await self._write(self.sql.announce_agent, params)

    async def unserved_runs(self, *, now: float, grace: float, limit: int = 100) -> list[Run]:
        params = {"now": now, "since": now - grace, "limit": limit}
        return [run_from_row(r) for r in await self._read(self.sql.unserved_runs, params)]

    async def renew_lease(self, run_id: str, *, owner: str, fence: int, expires_at: float) -> bool:
        params = {"run_id": run_id, "owner": owner, "fence": fence, "expires_at": expires_at}
        return (await self._write(self.sql.renew_lease, params)).rowcount == 1

    async def release_lease(self, run_id: str, *, owner: str, fence: int) -> None:
        params = {"run_id": run_id, "owner": owner, "fence": fence}
        await self._write(self.sql.release_lease, params)

    # -- errors ---------------------------------------------------------------------------------

    def _read_only(self) -> ConfigError:
        return ConfigError(
            f"the store of {redact_url(self.url)} was opened read-only: it writes nothing",
            hint="open it without readonly=True to write",
        )

    def _no_schema(self, where: str) -> StoreUnavailable:
        return StoreUnavailable(
            f"database {where} has no autonomic schema", hint="run `autonomic migrate` first"
        )
