"""The embedded default store: one SQLite file in WAL mode.

Calls are synchronous and short; they run on the event loop's thread because SQLite serialises
writers anyway and a thread hop would cost more than the call. Every write transaction starts with
``BEGIN IMMEDIATE`` so that a writer takes the lock before it reads what it will check, and several
processes (a worker and the CLI, say) can share one file. The same lock serialises migrators.

Group commit: commits of runs that reach ``commit`` in the same turn of the event loop share one
transaction and so one fsync, each inside its own savepoint, so one refused commit (a stale
version, a lost lease, a duplicate entry) never takes the others down. Alone, a commit pays one
extra hop through the loop and nothing else.

Durability: ``synchronous=FULL`` by default, so a commit survives power loss, not only a crash.
``?synchronous=normal`` in the URL trades that for speed (still safe against a process crash).

The statements and decisions PostgreSQL shares live in ``SqlStore`` (``sql.py``); this module keeps
the connection, those transactions, the group commit, and the translation of ``sqlite3``'s errors.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from autonomic.adapters.store.rows import (
    blob_addresses,
    blob_rows,
    entries_from_rows,
    journal_rows,
)
from autonomic.adapters.store.sql import (
    COMMIT_GUARD,
    CommitRequest,
    Execute,
    Params,
    Row,
    SqlStore,
    Written,
    run_params,
)
from autonomic.core.journal import Entry, PackedEntry
from autonomic.core.run import Run
from autonomic.errors import (
    ConcurrencyError,
    ConfigError,
    JournalConflict,
    NotFound,
    RunExists,
    StoreUnavailable,
)

_SYNC_MODES = {"full": "FULL", "normal": "NORMAL", "extra": "EXTRA"}


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


class SQLiteStore(SqlStore):
    """Runs in a SQLite file. See the module docstring for durability."""

    dialect = "sqlite"
    paramstyle = "named"
    migrations_table = (
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
    )

    def __init__(self, url: str, *, busy_timeout_ms: int = 10_000) -> None:
        super().__init__()
        self.url = url
        self.path, self.synchronous = parse_sqlite_url(url)
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

    # -- connection -----------------------------------------------------------------------------

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
                raise self._no_schema(str(self.path)) from None
            raise StoreUnavailable(f"SQLite database {self.path}: {exc}") from exc

    @contextmanager
    def _immediate(self, duplicate: type[Exception] | None = None) -> Iterator[sqlite3.Cursor]:
        """A write transaction that holds the database's write lock from its first statement."""
        with self._driver_errors(duplicate):
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    async def _read(self, sql: str, params: Params) -> list[Row]:
        with self._driver_errors():
            return self._db.execute(sql, params).fetchall()

    async def _write(self, sql: str, params: Params) -> Written:
        with self._immediate() as cur:
            rows = cur.execute(sql, params).fetchall()
            return Written(rows, cur.rowcount)

    @asynccontextmanager
    async def _migrating(self) -> AsyncIterator[Execute]:
        with self._immediate() as cur:  # the write lock is the migration lock

            async def execute(sql: str, params: Params | None) -> list[Row]:
                return cur.execute(sql, () if params is None else params).fetchall()

            yield execute

    def _script(self, script: str) -> list[str]:
        return _split_sql(script)  # sqlite3 runs one statement per call

    # -- runs -----------------------------------------------------------------------------------

    async def create_run(self, run: Run, entries: Sequence[PackedEntry]) -> Run:
        with self._immediate(RunExists) as cur:
            cur.execute(self.sql.insert_run, run_params(run))
            self._append(cur, entries, run.created_at)
        return run

    def _append(self, cur: sqlite3.Cursor, entries: Sequence[PackedEntry], now: float) -> None:
        blobs = blob_rows(entries, now)
        if blobs:
            cur.executemany("INSERT OR IGNORE INTO blobs VALUES (?, ?, ?, ?)", blobs)
        cur.executemany("INSERT INTO journal VALUES (?, ?, ?, ?, ?, ?)", journal_rows(entries))

    async def load_journal(self, run_id: str, *, after_seq: int = 0) -> list[Entry]:
        """Two statements, the entries and then their blobs: no round trips to save here."""
        with self._driver_errors():
            rows = self._db.execute(
                "SELECT seq, kind, payload, hash, created_at FROM journal "
                "WHERE run_id = ? AND seq > ? ORDER BY seq",
                (run_id, after_seq),
            ).fetchall()
            addresses = blob_addresses(rows)
            blobs: dict[str, bytes] = {}
            if addresses:
                marks = ", ".join("?" * len(addresses))
                blobs = dict(
                    self._db.execute(
                        f"SELECT address, data FROM blobs WHERE address IN ({marks})", addresses
                    )
                )
        return entries_from_rows(run_id, rows, blobs)

    # -- commits (see the module docstring) ------------------------------------------------------

    def _flush_soon(self) -> None:
        if len(self._queue) == 1:  # the first of this turn: write the group at the turn's end
            asyncio.get_running_loop().call_soon(self._commit_group)

    def _commit_group(self) -> None:
        group, self._queue = self._queue, []
        outcomes: list[int | Exception] = []
        try:
            with self._immediate() as cur:
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
                request.settle(exc)
            return
        for request, outcome in zip(group, outcomes, strict=True):
            request.settle(outcome)  # a cancelled caller's commit landed regardless

    def _commit_one(self, cur: sqlite3.Cursor, request: CommitRequest) -> int:
        changes = request.changes
        update = _update_statement(
            changes.release_lease,
            changes.lease_expires_at is not None,
            changes.status is not None,
            changes.set_output,
            changes.metadata is not None,
        )
        updated = cur.execute(update, request.params).fetchone()
        if updated is None:
            current = cur.execute(self.sql.run_version, request.params).fetchone()
            raise self._refusal(request, current)
        self._append(cur, request.entries, request.now)
        for approval in request.approvals:
            cur.execute(*self._approval_write(approval, request.now))
            self._approval_written(approval, cur.rowcount)
        return int(updated[0])

    async def close(self) -> None:
        self._db.close()


@functools.cache
def _update_statement(
    release_lease: bool, lease: bool, status: bool, output: bool, metadata: bool
) -> str:
    """The commit's guarded ``UPDATE``, assigning only the columns that change.

    SQLite rewrites every index that holds an assigned column, even when the value stays the same
    (``status`` is indexed). There are a few dozen shapes at most; each is built once.
    """
    sets = ["version = version + 1", "updated_at = :now"]
    if release_lease:
        sets += ["lease_owner = NULL", "lease_expires_at = 0"]
    elif lease:
        sets.append("lease_expires_at = :lease_expires_at")
    if status:
        sets += ["status = :status", "status_reason = :status_reason"]
    if output:
        sets.append("output = :output")
    if metadata:
        sets.append("metadata = :metadata")
    return f"UPDATE runs SET {', '.join(sets)} WHERE {COMMIT_GUARD} RETURNING version"


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
