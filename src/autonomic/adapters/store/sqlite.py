"""The embedded default store: one SQLite file in WAL mode.

Calls are synchronous and short; they run on the event loop's thread because SQLite serialises
writers anyway and a thread hop would cost more than the call. Every write transaction starts with
``BEGIN IMMEDIATE`` so that a writer takes the lock before it reads what it will check, and several
processes (a worker and the CLI, say) can share one file.

Durability: ``synchronous=FULL`` by default, so a commit survives power loss, not only a crash.
``?synchronous=normal`` in the URL trades that for speed (still safe against a process crash).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from autonomic.adapters.store import migrations
from autonomic.adapters.store.rows import (
    RUN_COLUMNS,
    blob_addresses,
    blob_rows,
    entries_from_rows,
    journal_rows,
    run_from_row,
    run_to_row,
)
from autonomic.core.approval import Approval, ApprovalStatus
from autonomic.core.canonical import canonical_json
from autonomic.core.journal import Entry, PackedEntry
from autonomic.core.run import Run, RunChanges, RunStatus
from autonomic.errors import (
    ApprovalConflict,
    ConcurrencyError,
    ConfigError,
    JournalConflict,
    LeaseLost,
    NotFound,
    RunExists,
    StaleVersion,
    StoreUnavailable,
)
from autonomic.ports.store import Claim, Store

_SYNC_MODES = {"full": "FULL", "normal": "NORMAL", "extra": "EXTRA"}


@dataclass(frozen=True, slots=True)
class _CommitRequest:
    run_id: str
    expected_version: int
    fence: int | None
    entries: Sequence[PackedEntry]
    changes: RunChanges
    now: float
    approvals: tuple[Approval, ...]
    done: asyncio.Future[int]


def parse_sqlite_url(url: str) -> tuple[Path, str]:
    """``sqlite:///relative.db``, ``sqlite:////abs/path.db`` -> (path, synchronous mode)."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite":
        raise ConfigError(f"not a SQLite URL: {url!r}", hint="write sqlite:///path/to/file.db")
    raw = parts.path[1:] if parts.path.startswith("/") else parts.path
    if not raw:
        raise ConfigError(
            f"SQLite URL {url!r} has no file path", hint="write sqlite:///autonomic.db"
        )
    mode = parse_qs(parts.query).get("synchronous", ["full"])[0].lower()
    if mode not in _SYNC_MODES:
        raise ConfigError(
            f"unknown SQLite synchronous mode {mode!r}", hint="use synchronous=full or normal"
        )
    return Path(raw), _SYNC_MODES[mode]


class SQLiteStore(Store):
    """Runs in a SQLite file. See the module docstring for durability."""

    def __init__(self, url: str, *, busy_timeout_ms: int = 10_000) -> None:
        self.url = url
        self.path, self.synchronous = parse_sqlite_url(url)
        self._check_version = True  # only the lost-update test turns this off
        self._group: list[_CommitRequest] = []
        if not self.path.parent.exists():
            raise StoreUnavailable(
                f"cannot open SQLite database {self.path}: directory {self.path.parent} does not exist",
                hint="create the directory or point --db / AUTONOMIC_DB elsewhere",
            )
        try:
            self._db = sqlite3.connect(
                self.path,
                isolation_level=None,
                check_same_thread=False,
                timeout=busy_timeout_ms / 1000,
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={self.synchronous}")
            self._db.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        except sqlite3.DatabaseError as exc:
            raise StoreUnavailable(
                f"cannot open SQLite database {self.path}: {exc}",
                hint="is it a SQLite file? point --db / AUTONOMIC_DB at another path",
            ) from exc

    @contextmanager
    def _driver_errors(self, duplicate: type[Exception] | None = None) -> Iterator[None]:
        """Translate the driver's errors into the port's: a caller never sees ``sqlite3``."""
        try:
            yield
        except sqlite3.ProgrammingError as exc:
            if "closed" in str(exc):
                raise StoreUnavailable(
                    "the SQLite store is closed", hint="open a new store"
                ) from None
            raise
        except sqlite3.IntegrityError as exc:
            if duplicate is not None and "UNIQUE" in str(exc):
                raise duplicate(f"refused, nothing written: {exc}") from None
            raise
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                raise StoreUnavailable(
                    f"database {self.path} has no autonomic schema",
                    hint="run `autonomic migrate` first",
                ) from None
            raise StoreUnavailable(f"SQLite database {self.path}: {exc}") from exc

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._driver_errors():
            yield self._db

    @contextmanager
    def _write(self, duplicate: type[Exception] | None = None) -> Iterator[sqlite3.Cursor]:
        with self._driver_errors(duplicate):
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    async def migrate(self) -> list[str]:
        applied: list[str] = []
        with self._write() as cur:
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
            )
            done = {r[0] for r in cur.execute("SELECT version FROM schema_migrations")}
            for m in migrations.load("sqlite"):
                if m.version in done:
                    continue
                for statement in _split_sql(m.sql):
                    cur.execute(statement)
                cur.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?, ?)",
                    (m.version, m.name, time.time()),
                )
                applied.append(f"{m.version:04d}_{m.name}")
        return applied

    async def create_run(self, run: Run, entries: Sequence[PackedEntry]) -> Run:
        with self._write(RunExists) as cur:
            cur.execute(
                f"INSERT INTO runs ({RUN_COLUMNS}) VALUES ({', '.join('?' * 19)})", run_to_row(run)
            )
            self._append(cur, entries, run.created_at)
        return run

    def _append(self, cur: sqlite3.Cursor, entries: Sequence[PackedEntry], now: float) -> None:
        blobs = blob_rows(entries, now)
        if blobs:
            cur.executemany("INSERT OR IGNORE INTO blobs VALUES (?, ?, ?, ?)", blobs)
        cur.executemany("INSERT INTO journal VALUES (?, ?, ?, ?, ?, ?)", journal_rows(entries))

    async def get_run(self, run_id: str) -> Run:
        with self._read() as db:
            row = db.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise NotFound(
                f"no run {run_id}", hint="`autonomic runs` lists the runs in this database"
            )
        return run_from_row(row)

    async def list_runs(
        self, *, status: RunStatus | None = None, tenant: str | None = None, limit: int = 50
    ) -> list[Run]:
        sql = f"SELECT {RUN_COLUMNS} FROM runs WHERE (? IS NULL OR status = ?) AND (? IS NULL OR tenant = ?) ORDER BY created_at DESC LIMIT ?"
        s = status.value if status else None
        with self._read() as db:
            rows = db.execute(sql, (s, s, tenant, tenant, limit)).fetchall()
        return [run_from_row(r) for r in rows]

    async def load_journal(self, run_id: str, *, after_seq: int = 0) -> list[Entry]:
        with self._read() as db:
            rows = db.execute(
                "SELECT seq, kind, payload, hash, created_at FROM journal "
                "WHERE run_id = ? AND seq > ? ORDER BY seq",
                (run_id, after_seq),
            ).fetchall()
            addresses = blob_addresses(rows)
            blobs: dict[str, bytes] = {}
            if addresses:
                marks = ", ".join("?" * len(addresses))
                blobs = dict(
                    db.execute(
                        f"SELECT address, data FROM blobs WHERE address IN ({marks})", addresses
                    )
                )
        return entries_from_rows(run_id, rows, blobs)

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

        Group commit: commits of runs that reach this point in the same turn of the event loop
        share one transaction and so one fsync, each inside its own savepoint, so one refused
        commit (a stale version, a lost lease) never takes the others down. Alone, a commit pays
        one extra hop through the loop and nothing else.
        """
        loop = asyncio.get_running_loop()
        request = _CommitRequest(
            run_id,
            expected_version,
            fence,
            entries,
            changes,
            now,
            tuple(approvals),
            loop.create_future(),
        )
        self._group.append(request)
        if len(self._group) == 1:
            loop.call_soon(self._commit_group)
        return await request.done

    def _commit_group(self) -> None:
        group, self._group = self._group, []
        outcomes: list[int | Exception] = []
        try:
            with self._write() as cur:
                for request in group:
                    cur.execute("SAVEPOINT one_commit")
                    try:
                        outcomes.append(self._commit_one(cur, request))
                    except (sqlite3.IntegrityError, ConcurrencyError, NotFound) as exc:
                        cur.execute("ROLLBACK TO one_commit")
                        outcomes.append(
                            JournalConflict(f"refused, nothing written: {exc}")
                            if isinstance(exc, sqlite3.IntegrityError)
                            else exc
                        )
                    cur.execute("RELEASE one_commit")
        except Exception as exc:  # the transaction itself failed: nothing of the group landed
            for request in group:
                if not request.done.done():
                    request.done.set_exception(exc)
            return
        for request, outcome in zip(group, outcomes, strict=True):
            if request.done.done():  # the caller was cancelled; its commit landed regardless
                continue
            if isinstance(outcome, Exception):
                request.done.set_exception(outcome)
            else:
                request.done.set_result(outcome)

    def _commit_one(self, cur: sqlite3.Cursor, request: _CommitRequest) -> int:
        changes = request.changes
        # Only the columns that change are assigned: SQLite rewrites every index that holds an
        # assigned column, even when the value stays the same (``status`` is indexed).
        sets = ["version = version + 1", "updated_at = :now"]
        params: dict[str, object] = {
            "now": request.now,
            "id": request.run_id,
            "check": int(self._check_version),
            "expected": request.expected_version,
            "fence": request.fence,
        }
        if changes.release_lease:
            sets += ["lease_owner = NULL", "lease_expires_at = 0"]
        elif changes.lease_expires_at is not None:
            sets.append("lease_expires_at = :lease_expires_at")
            params["lease_expires_at"] = changes.lease_expires_at
        if changes.status is not None:
            sets += ["status = :status", "status_reason = :status_reason"]
            params["status"] = changes.status.value
            params["status_reason"] = changes.status_reason
        if changes.set_output:
            sets.append("output = :output")
            params["output"] = canonical_json(changes.output)
        if changes.metadata is not None:
            sets.append("metadata = :metadata")
            params["metadata"] = canonical_json(changes.metadata)
        cur.execute(
            f"UPDATE runs SET {', '.join(sets)} WHERE id = :id "
            "AND (:check = 0 OR version = :expected) AND (:fence IS NULL OR fence = :fence) "
            "RETURNING version",
            params,
        )
        updated = cur.fetchone()
        if updated is None:
            raise self._conflict(cur, request.run_id, request.fence)
        self._append(cur, request.entries, request.now)
        for approval in request.approvals:
            self._write_approval(cur, approval, request.now)
        return int(updated[0])

    def _write_approval(self, cur: sqlite3.Cursor, approval: Approval, now: float) -> None:
        body = canonical_json(approval.to_dict())
        if approval.version == 1:
            cur.execute(
                "INSERT OR IGNORE INTO approvals VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    approval.id,
                    approval.run_id,
                    approval.tenant,
                    approval.status.value,
                    1,
                    body,
                    approval.created_at,
                    now,
                ),
            )
        else:
            cur.execute(
                "UPDATE approvals SET status = ?, version = ?, body = ?, updated_at = ? "
                "WHERE id = ? AND version = ?",
                (
                    approval.status.value,
                    approval.version,
                    body,
                    now,
                    approval.id,
                    approval.version - 1,
                ),
            )
        if cur.rowcount != 1:
            raise ApprovalConflict(
                f"approval {approval.id} changed meanwhile (or exists already); nothing written",
                hint="reload it and decide again",
            )

    async def get_approval(self, approval_id: str) -> Approval:
        with self._read() as db:
            row = db.execute("SELECT body FROM approvals WHERE id = ?", (approval_id,)).fetchone()
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
        s = status.value if status else None
        with self._read() as db:
            rows = db.execute(
                "SELECT body FROM approvals WHERE (? IS NULL OR status = ?) "
                "AND (? IS NULL OR tenant = ?) AND (? IS NULL OR run_id = ?) "
                "ORDER BY created_at, id LIMIT ?",
                (s, s, tenant, tenant, run_id, run_id, limit),
            ).fetchall()
        return [Approval.from_dict(json.loads(r[0])) for r in rows]

    def _conflict(self, cur: sqlite3.Cursor, run_id: str, fence: int | None) -> Exception:
        row = cur.execute("SELECT version, fence FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            return NotFound(f"no run {run_id}")
        if fence is not None and row[1] != fence:
            return LeaseLost(f"run {run_id}: fence {fence} is stale (now {row[1]})")
        return StaleVersion(f"run {run_id}: version moved on to {row[0]}")

    async def claim(self, claim: Claim) -> Run | None:
        with self._write() as cur:
            row = cur.execute(
                "SELECT id FROM runs WHERE status IN ('PENDING', 'RUNNING') "
                "AND (lease_expires_at < ? OR (? IS NOT NULL AND lease_owner = ?)) "
                "AND (? IS NULL OR id = ?) AND (? IS NULL OR tenant = ?) "
                "ORDER BY created_at LIMIT 1",
                (
                    claim.now,
                    claim.steal_from,
                    claim.steal_from,
                    claim.run_id,
                    claim.run_id,
                    claim.tenant,
                    claim.tenant,
                ),
            ).fetchone()
            if row is None:
                return None
            claimed = cur.execute(
                f"UPDATE runs SET lease_owner = ?, lease_expires_at = ?, fence = fence + 1 "
                f"WHERE id = ? RETURNING {RUN_COLUMNS}",
                (claim.owner, claim.now + claim.ttl, row[0]),
            ).fetchone()
        return run_from_row(claimed)

    async def renew_lease(self, run_id: str, *, owner: str, fence: int, expires_at: float) -> bool:
        with self._write() as cur:
            cur.execute(
                "UPDATE runs SET lease_expires_at = ? WHERE id = ? AND fence = ? AND lease_owner = ?",
                (expires_at, run_id, fence, owner),
            )
            return cur.rowcount == 1

    async def release_lease(self, run_id: str, *, owner: str, fence: int) -> None:
        with self._write() as cur:
            cur.execute(
                "UPDATE runs SET lease_owner = NULL, lease_expires_at = 0 "
                "WHERE id = ? AND fence = ? AND lease_owner = ?",
                (run_id, fence, owner),
            )

    async def close(self) -> None:
        self._db.close()


def _split_sql(script: str) -> list[str]:
    """Statements of a migration; trigger bodies (BEGIN ... END;) stay whole."""
    statements: list[str] = []
    current: list[str] = []
    in_trigger = False
    for line in script.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("--"):
            continue
        current.append(line)
        upper = stripped.upper()
        if upper.startswith("CREATE TRIGGER"):
            in_trigger = True
        if (in_trigger and upper.endswith("END;")) or (not in_trigger and stripped.endswith(";")):
            statements.append("\n".join(current))
            current = []
            in_trigger = False
    return statements
