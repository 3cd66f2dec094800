"""The production store: PostgreSQL through psycopg 3 and an async connection pool.

Semantics are those of ``SQLiteStore`` (the conformance suite in
``autonomic.testing.store_conformance`` holds both to them); what differs is how they are reached:

* Every write is one SQL statement, so one round trip and its own transaction (connections run in
  autocommit). ``commit`` is a single ``WITH`` statement: it locks the run's row, applies the
  guarded ``UPDATE runs ... RETURNING version``, and inserts the journal rows and blobs only if
  that update matched; it also returns the row's version and fence as of the statement's start,
  so a refused commit is usually classified (``NotFound``, ``LeaseLost`` or ``StaleVersion``)
  without another round trip (one more when it lost a race that began during the statement).
* ``claim`` picks a run with ``FOR UPDATE SKIP LOCKED``, so concurrent workers never wait on one
  another and never get the same run.
* ``migrate`` runs under ``pg_advisory_xact_lock`` keyed on the schema, so concurrent migrators of
  one schema take turns and each migration is applied once.

The URL is handed to libpq as is: ``postgresql://`` or ``postgres://``, with any parameters libpq
knows (``options=-csearch_path%3Dmyschema``, ``sslmode``, ``connect_timeout`` ...). The pool opens
on first use; the first connection is made directly so that an unreachable server fails at once
with a message naming it, instead of after the pool's timeout.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import psycopg
import psycopg.errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from autonomic.adapters.store import migrations
from autonomic.adapters.store.rows import (
    RUN_COLUMNS,
    blob_rows,
    entries_from_rows,
    journal_rows,
    redact_url,
    run_from_row,
    run_to_row,
)
from autonomic.core.approval import Approval, ApprovalStatus
from autonomic.core.canonical import canonical_json
from autonomic.core.journal import Entry, PackedEntry, blob_reference
from autonomic.core.run import Run, RunChanges, RunStatus
from autonomic.errors import (
    ApprovalConflict,
    ConfigError,
    JournalConflict,
    LeaseLost,
    NotFound,
    RunExists,
    StaleVersion,
    StoreUnavailable,
)
from autonomic.ports.store import Claim, Store

Connection = psycopg.AsyncConnection[TupleRow]

_SCHEMES = ("postgresql", "postgres")
_DEFAULT_CONNECT_TIMEOUT = 10
_POOL_TIMEOUT = 30.0
_MIGRATION_LOCK = "autonomic.migrate"

_RUN_NAMES = [c.strip() for c in RUN_COLUMNS.split(",")]
_INSERT_RUN = (
    f"INSERT INTO runs ({RUN_COLUMNS}) "
    f"VALUES ({', '.join(f'%(r_{c})s' for c in _RUN_NAMES)}) RETURNING id"
)

# Inserts of journal rows and blobs that only happen when the CTE ``head`` produced a row.
_APPEND = """
blob_rows AS (
    INSERT INTO blobs (address, data, size, created_at)
    SELECT a, d, s, %(blob_at)s::double precision
    FROM unnest(%(b_address)s::text[], %(b_data)s::bytea[], %(b_size)s::bigint[]) AS t(a, d, s)
    WHERE EXISTS (SELECT 1 FROM head)
    ON CONFLICT (address) DO NOTHING
),
journal_rows AS (
    INSERT INTO journal (run_id, seq, kind, payload, hash, created_at)
    SELECT r, s, k, p, h, c
    FROM unnest(
        %(j_run_id)s::text[], %(j_seq)s::bigint[], %(j_kind)s::text[], %(j_payload)s::text[],
        %(j_hash)s::text[], %(j_created_at)s::double precision[]
    ) AS t(r, s, k, p, h, c)
    WHERE EXISTS (SELECT 1 FROM head)
)"""

_CREATE = f"WITH head AS ({_INSERT_RUN}),{_APPEND}\nSELECT id FROM head"

# ``current`` is the row as this statement's snapshot saw it, which classifies most refusals in the
# same round trip; see ``PostgresStore.commit`` for the one case that needs a second look.
_COMMIT = f"""WITH current AS (
    SELECT version AS current_version, fence AS current_fence
    FROM runs WHERE id = %(run_id)s::text
),
head AS (
    UPDATE runs SET
        version = version + 1,
        updated_at = %(now)s::double precision,
        lease_owner = CASE WHEN %(release_lease)s::boolean THEN NULL ELSE lease_owner END,
        lease_expires_at = CASE WHEN %(release_lease)s::boolean THEN 0
            ELSE COALESCE(%(lease_expires_at)s::double precision, lease_expires_at) END,
        status = COALESCE(%(status)s::text, status),
        status_reason = CASE WHEN %(status)s::text IS NULL THEN status_reason
                             ELSE %(status_reason)s::text END,
        output = CASE WHEN %(set_output)s::boolean THEN %(output)s::text ELSE output END,
        metadata = COALESCE(%(metadata)s::text, metadata)
    WHERE id = %(run_id)s::text
      AND (NOT %(check_version)s::boolean OR version = %(expected_version)s::bigint)
      AND (%(fence)s::bigint IS NULL OR fence = %(fence)s::bigint)
    RETURNING version
),{_APPEND}
SELECT (SELECT version FROM head), (SELECT current_version FROM current),
       (SELECT current_fence FROM current)"""

_CLAIM = f"""UPDATE runs
SET lease_owner = %(owner)s::text, lease_expires_at = %(expires_at)s::double precision,
    fence = fence + 1
WHERE id = (
    SELECT id FROM runs
    WHERE status IN ('PENDING', 'RUNNING')
      AND (lease_expires_at < %(now)s::double precision
           OR (%(steal_from)s::text IS NOT NULL AND lease_owner = %(steal_from)s::text))
      AND (%(run_id)s::text IS NULL OR id = %(run_id)s::text)
      AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s::text)
    ORDER BY created_at
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
RETURNING {RUN_COLUMNS}"""

_LOAD_JOURNAL = """SELECT j.seq, j.kind, j.payload, j.hash, j.created_at, b.data
FROM journal j
LEFT JOIN blobs b ON starts_with(j.payload, '{"$blob":')
    AND b.address = (j.payload::json ->> '$blob')
WHERE j.run_id = %s AND j.seq > %s
ORDER BY j.seq"""


class PostgresStore(Store):
    """Runs in a PostgreSQL database. See the module docstring for how each write is made."""

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 20) -> None:
        scheme = url.partition("://")[0].lower()
        if scheme not in _SCHEMES:
            raise ConfigError(
                f"not a PostgreSQL URL: {redact_url(url)!r}",
                hint="write postgresql://user@host:5432/dbname",
            )
        self._secrets = _url_passwords(url)
        try:
            params = conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise ConfigError(
                f"bad PostgreSQL URL {redact_url(url)!r}: {self._scrub(_first_line(exc))}",
                hint="write postgresql://user@host:5432/dbname",
            ) from None
        if params.get("password"):
            self._secrets.add(str(params["password"]))
        self.url = url
        self._check_version = True  # only the lost-update test turns this off
        self._min_size = min_size
        self._max_size = max_size
        host = str(params.get("host") or params.get("hostaddr") or "localhost")
        port = str(params.get("port") or "5432")
        self._target = f"{host}:{port}/{params.get('dbname') or params.get('user') or ''}"
        self._connect_kwargs: dict[str, Any] = {"autocommit": True}
        if "connect_timeout" not in params:
            self._connect_kwargs["connect_timeout"] = _DEFAULT_CONNECT_TIMEOUT
        self._pool: AsyncConnectionPool[Connection] | None = None
        self._opening = asyncio.Lock()
        self._closed = False
        self._group: list[_CommitRequest] = []
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
                try:
                    probe = await psycopg.AsyncConnection.connect(self.url, **self._connect_kwargs)
                except psycopg.OperationalError as exc:
                    raise self._unavailable(exc) from None
                await probe.close()
                pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
                    self.url,
                    kwargs=self._connect_kwargs,
                    min_size=self._min_size,
                    max_size=self._max_size,
                    open=False,
                    name="autonomic",
                    timeout=_POOL_TIMEOUT,
                )
                try:
                    await pool.open(wait=True, timeout=_POOL_TIMEOUT)
                except PoolTimeout as exc:
                    await pool.close()
                    raise self._unavailable(exc) from None
                self._pool = pool
        return self._pool

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Connection]:
        """A pooled connection (autocommit); driver errors that mean "unavailable" translated."""
        pool = await self._get_pool()
        try:
            async with pool.connection() as conn:
                yield conn
        except PoolTimeout as exc:
            raise self._unavailable(exc) from None
        except psycopg.errors.UndefinedTable:
            raise StoreUnavailable(
                f"database {redact_url(self.url)} has no autonomic schema",
                hint="run `autonomic migrate` first",
            ) from None
        except psycopg.OperationalError as exc:
            if _is_disconnect(exc):
                raise self._unavailable(exc) from None
            raise

    # -- schema -----------------------------------------------------------------------------------

    async def migrate(self) -> list[str]:
        applied: list[str] = []
        async with self._connection() as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s), hashtext(coalesce(current_schema(), '')))",
                (_MIGRATION_LOCK,),
            )
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                "name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
            )
            cur = await conn.execute("SELECT version FROM schema_migrations")
            done = {int(row[0]) for row in await cur.fetchall()}
            for m in migrations.load("postgres"):
                if m.version in done:
                    continue
                await conn.execute(m.sql)  # no parameters: sent as one multi-statement script
                await conn.execute(
                    "INSERT INTO schema_migrations VALUES (%s, %s, extract(epoch FROM now()))",
                    (m.version, m.name),
                )
                applied.append(f"{m.version:04d}_{m.name}")
        return applied

    # -- runs -------------------------------------------------------------------------------------

    async def create_run(self, run: Run, entries: Sequence[PackedEntry]) -> Run:
        params = {
            f"r_{name}": value for name, value in zip(_RUN_NAMES, run_to_row(run), strict=True)
        }
        params.update(_append_params(entries, run.created_at))
        async with self._connection() as conn:
            try:
                await conn.execute(_CREATE, params)
            except psycopg.errors.UniqueViolation as exc:
                raise RunExists(f"run {run.id} exists already: {_first_line(exc)}") from None
        return run

    async def get_run(self, run_id: str) -> Run:
        async with self._connection() as conn:
            cur = await conn.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE id = %s", (run_id,))
            row = await cur.fetchone()
        if row is None:
            raise NotFound(
                f"no run {run_id}", hint="`autonomic runs` lists the runs in this database"
            )
        return run_from_row(row)

    async def list_runs(
        self, *, status: RunStatus | None = None, tenant: str | None = None, limit: int = 50
    ) -> list[Run]:
        async with self._connection() as conn:
            cur = await conn.execute(
                f"SELECT {RUN_COLUMNS} FROM runs "
                "WHERE (%(status)s::text IS NULL OR status = %(status)s::text) "
                "AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s::text) "
                "ORDER BY created_at DESC LIMIT %(limit)s::bigint",
                {"status": status.value if status else None, "tenant": tenant, "limit": limit},
            )
            rows = await cur.fetchall()
        return [run_from_row(r) for r in rows]

    async def load_journal(self, run_id: str, *, after_seq: int = 0) -> list[Entry]:
        async with self._connection() as conn:
            cur = await conn.execute(_LOAD_JOURNAL, (run_id, after_seq))
            rows = await cur.fetchall()
        blobs: dict[str, bytes] = {}
        for row in rows:
            address = blob_reference(row[2])
            if address is not None and row[5] is not None:
                blobs[address] = bytes(row[5])
        return entries_from_rows(run_id, [row[:5] for row in rows], blobs)

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
    ) -> int:
        """Queue the commit and wait until it is durable.

        Group commit: while one group is on its way to the server, later commits queue; the next
        group goes as one transaction of pipelined statements (one round trip, one WAL flush). A
        commit that finds no group in flight goes alone, as a single autocommit statement, so a
        lone run pays nothing for the grouping.
        """
        params: dict[str, Any] = {
            "run_id": run_id,
            "now": now,
            "lease_expires_at": changes.lease_expires_at,
            "release_lease": changes.release_lease,
            "status": changes.status.value if changes.status else None,
            "status_reason": changes.status_reason,
            "set_output": changes.set_output,
            "output": canonical_json(changes.output) if changes.set_output else None,
            "metadata": canonical_json(changes.metadata) if changes.metadata is not None else None,
            "check_version": self._check_version,
            "expected_version": expected_version,
            "fence": fence,
        }
        params.update(_append_params(entries, now))
        request = _CommitRequest(
            run_id,
            expected_version,
            fence,
            params,
            tuple(approvals),
            asyncio.get_running_loop().create_future(),
        )
        self._group.append(request)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_groups())
        return await request.done

    async def _flush_groups(self) -> None:
        while self._group:
            group, self._group = self._group, []
            try:
                # Approvals need their own transaction (see ``commit``), so they go alone.
                alone = [r for r in group if r.approvals]
                together = [r for r in group if not r.approvals]
                for request in alone:
                    await self._commit_alone(request)
                if len(together) == 1:
                    await self._commit_alone(together[0])
                elif together:
                    await self._commit_together(together)
            except BaseException as exc:  # e.g. the store is unavailable: tell every waiter
                for request in group:
                    if not request.done.done():
                        request.done.set_exception(
                            exc if isinstance(exc, Exception) else StoreUnavailable(str(exc))
                        )
                if not isinstance(exc, Exception):
                    raise

    async def _commit_alone(self, request: _CommitRequest) -> None:
        try:
            await self._commit_alone_or_raise(request)
        except (JournalConflict, ApprovalConflict) as exc:
            _settle(request, exc)

    async def _commit_alone_or_raise(self, request: _CommitRequest) -> None:
        async with self._connection() as conn:
            if request.approvals:
                async with conn.transaction():
                    row = await self._commit_statement(conn, request.run_id, request.params)
                    if row[0] is not None:
                        for approval in request.approvals:
                            await _write_approval(conn, approval, request.params["now"])
            else:
                row = await self._commit_statement(conn, request.run_id, request.params)
            outcome = await self._outcome(conn, request, row)
        _settle(request, outcome)

    async def _commit_together(self, group: list[_CommitRequest]) -> None:
        group.sort(key=lambda r: r.run_id)  # one lock order for every group: no deadlocks
        try:
            async with self._connection() as conn, conn.transaction():
                async with conn.pipeline():
                    cursors = [await conn.execute(_COMMIT, r.params) for r in group]
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
            _settle(request, outcome)

    async def _outcome(
        self, conn: Connection, request: _CommitRequest, row: tuple[Any, ...]
    ) -> int | Exception:
        """The new version, or the error that says why the guarded update matched no row."""
        version, current_version, current_fence = row
        if version is not None:
            return int(version)
        fence = request.fence
        if (
            current_version is not None
            and (fence is None or current_fence == fence)
            and (not self._check_version or current_version == request.expected_version)
        ):
            # The snapshot saw a row the update should have matched: another writer changed
            # it while this statement waited for the row lock. Look again, now that it is done.
            cur = await conn.execute(
                "SELECT version, fence FROM runs WHERE id = %s", (request.run_id,)
            )
            latest = await cur.fetchone()
            current_version, current_fence = latest if latest is not None else (None, None)
        run_id = request.run_id
        if current_version is None:
            return NotFound(f"no run {run_id}")
        if fence is not None and current_fence != fence:
            return LeaseLost(f"run {run_id}: fence {fence} is stale (now {current_fence})")
        return StaleVersion(f"run {run_id}: version moved on to {current_version}")

    async def _commit_statement(
        self, conn: Connection, run_id: str, params: dict[str, Any]
    ) -> tuple[Any, ...]:
        try:
            cur = await conn.execute(_COMMIT, params)
        except psycopg.errors.UniqueViolation as exc:
            raise JournalConflict(
                f"run {run_id}: refused, nothing written: {_first_line(exc)}"
            ) from None
        row = await cur.fetchone()
        assert row is not None  # the final SELECT always yields one row
        return tuple(row)

    # -- approvals --------------------------------------------------------------------------------

    async def get_approval(self, approval_id: str) -> Approval:
        async with self._connection() as conn:
            cur = await conn.execute("SELECT body FROM approvals WHERE id = %s", (approval_id,))
            row = await cur.fetchone()
        if row is None:
            raise NotFound(
                f"no approval {approval_id}", hint="`autonomic approvals` lists the pending ones"
            )
        return Approval.from_dict(json.loads(row[0]))

    async def list_approvals(
        self,
        *,
        status: ApprovalStatus | None = None,
        tenant: str | None = None,
        run_id: str | None = None,
        limit: int = 100,
    ) -> list[Approval]:
        async with self._connection() as conn:
            cur = await conn.execute(
                "SELECT body FROM approvals "
                "WHERE (%(status)s::text IS NULL OR status = %(status)s::text) "
                "AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s::text) "
                "AND (%(run_id)s::text IS NULL OR run_id = %(run_id)s::text) "
                "ORDER BY created_at, id LIMIT %(limit)s::bigint",
                {
                    "status": status.value if status else None,
                    "tenant": tenant,
                    "run_id": run_id,
                    "limit": limit,
                },
            )
            rows = await cur.fetchall()
        return [Approval.from_dict(json.loads(r[0])) for r in rows]

    # -- leases -----------------------------------------------------------------------------------

    async def claim(self, claim: Claim) -> Run | None:
        params = {
            "owner": claim.owner,
            "expires_at": claim.now + claim.ttl,
            "now": claim.now,
            "steal_from": claim.steal_from,
            "run_id": claim.run_id,
            "tenant": claim.tenant,
        }
        async with self._connection() as conn:
            cur = await conn.execute(_CLAIM, params)
            row = await cur.fetchone()
        return run_from_row(row) if row is not None else None

    async def renew_lease(self, run_id: str, *, owner: str, fence: int, expires_at: float) -> bool:
        async with self._connection() as conn:
            cur = await conn.execute(
                "UPDATE runs SET lease_expires_at = %s "
                "WHERE id = %s AND fence = %s AND lease_owner = %s",
                (expires_at, run_id, fence, owner),
            )
            return cur.rowcount == 1

    async def release_lease(self, run_id: str, *, owner: str, fence: int) -> None:
        async with self._connection() as conn:
            await conn.execute(
                "UPDATE runs SET lease_owner = NULL, lease_expires_at = 0 "
                "WHERE id = %s AND fence = %s AND lease_owner = %s",
                (run_id, fence, owner),
            )

    async def close(self) -> None:
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()


@dataclass(frozen=True, slots=True)
class _CommitRequest:
    run_id: str
    expected_version: int
    fence: int | None
    params: dict[str, Any]
    approvals: tuple[Approval, ...]
    done: asyncio.Future[int]


def _settle(request: _CommitRequest, outcome: int | Exception) -> None:
    if request.done.done():  # the caller was cancelled; what landed, landed
        return
    if isinstance(outcome, Exception):
        request.done.set_exception(outcome)
    else:
        request.done.set_result(outcome)


async def _write_approval(conn: Connection, approval: Approval, now: float) -> None:
    """Insert (version 1) or replace-if-unchanged one approval, inside the commit's transaction."""
    body = canonical_json(approval.to_dict())
    if approval.version == 1:
        cur = await conn.execute(
            "INSERT INTO approvals (id, run_id, tenant, status, version, body, created_at, "
            "updated_at) VALUES (%s, %s, %s, %s, 1, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
            (
                approval.id,
                approval.run_id,
                approval.tenant,
                approval.status.value,
                body,
                approval.created_at,
                now,
            ),
        )
    else:
        cur = await conn.execute(
            "UPDATE approvals SET status = %s, version = %s, body = %s, updated_at = %s "
            "WHERE id = %s AND version = %s",
            (approval.status.value, approval.version, body, now, approval.id, approval.version - 1),
        )
    if cur.rowcount != 1:
        raise ApprovalConflict(
            f"approval {approval.id} changed meanwhile (or exists already); nothing written",
            hint="reload it and decide again",
        )


def _append_params(entries: Sequence[PackedEntry], blob_at: float) -> dict[str, Any]:
    """Column arrays for the journal and blob inserts of ``_APPEND``."""
    journal = journal_rows(entries)
    blobs = {address: (data, size) for address, data, size, _ in blob_rows(entries, blob_at)}
    return {
        "blob_at": blob_at,
        "b_address": list(blobs),
        "b_data": [data for data, _ in blobs.values()],
        "b_size": [size for _, size in blobs.values()],
        "j_run_id": [r[0] for r in journal],
        "j_seq": [r[1] for r in journal],
        "j_kind": [r[2] for r in journal],
        "j_payload": [r[3] for r in journal],
        "j_hash": [r[4] for r in journal],
        "j_created_at": [r[5] for r in journal],
    }


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
