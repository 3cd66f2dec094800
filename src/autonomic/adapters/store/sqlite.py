"""The embedded default store: one SQLite file in WAL mode.

Calls are synchronous and short; they run on the event loop's thread because SQLite serialises
writers anyway and a thread hop would cost more than the call. Every write transaction starts with
``BEGIN IMMEDIATE`` so that a writer takes the lock before it reads what it will check, and several
processes (a worker and the CLI, say) can share one file. The same lock serialises migrators.

Group commit: commits of runs that reach ``commit`` in the same turn of the event loop share one
transaction and so one fsync, each inside its own savepoint, so one refused commit (a stale
version, a lost lease, a duplicate entry) never takes the others down. Alone, a commit pays one
extra hop through the loop and nothing else (no savepoint: its refusal rolls the transaction
back).

Durability: ``synchronous=FULL`` by default, so a commit survives power loss, not only a crash.
``?synchronous=normal`` in the URL trades that for speed (still safe against a process crash).

Nothing is written into a file before it has been found to be autonomic's and whole: opening
writes nothing (a missing file is created only when asked, ``create``; ``readonly`` opens it
read-only), and ``migrate``, the first writer, reads every page first (``PRAGMA quick_check``)
and then what the file holds (``schema.py``). A damaged file (SQLite's ``SQLITE_CORRUPT`` or
``SQLITE_NOTADB``, found then or by any later statement) is ``StoreDamaged``, and the store
attempts no write into it after that.

The statements and decisions PostgreSQL shares live in ``SqlStore`` (``sql.py``); this module keeps
the connection, those transactions, the group commit, and the translation of ``sqlite3``'s errors.
"""

from __future__ import annotations

import asyncio
import functools
import shlex
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from autonomic.adapters.store.rows import (
    blob_addresses,
    blob_rows,
    entries_from_rows,
    journal_rows,
)
from autonomic.adapters.store.sql import (
    COMMIT_GUARD,
    Anchor,
    CommitRequest,
    Execute,
    Params,
    Row,
    SqlStore,
    Written,
    run_params,
)
from autonomic.core.audit import AuditNote, record_hash
from autonomic.core.events import Event
from autonomic.core.journal import Entry, PackedEntry
from autonomic.core.run import Run
from autonomic.errors import (
    ConcurrencyError,
    ConfigError,
    JournalConflict,
    NotFound,
    RunExists,
    StoreDamaged,
    StoreUnavailable,
)
from autonomic.ports.store import Processed

_AUDIT_HEAD = "SELECT pos, hash FROM audit_log ORDER BY pos DESC LIMIT 1"


def _hex(stored: object) -> str:
    """A stored hash as hex text. Audit records and journal entries written since issue 17's
    compaction keep their hash as its 32 raw bytes (a BLOB in the TEXT column: SQLite stores
    what it is given), half the 64 characters of hex; older ones (and the log's genesis record)
    keep the hex text, and a database may hold both. The chains are the same either way: a
    hash covers the hex of the one before it, and every reader gets hex: converted here, by
    ``entries_from_rows`` (``rows.py``), and for the scans ``verify`` reads by
    ``_hash_column`` - never by ``hex()`` in the query, which costs more per row and which
    SQLite spells in capitals."""
    return stored.hex() if isinstance(stored, bytes) else str(stored)


def _hash_column(stored: bytes) -> str:
    """``_hex`` as ``sqlite3``'s converter of a column named ``"hash [autonomic_hash]"`` (the
    scans ``verify`` reads: ``SqlStore.hash_hex``), which is given the value's
    bytes whatever its type: a BLOB's 32, a TEXT's UTF-8. Called from C per row, it costs less
    than a pass in Python that builds every row again (measured with ``verify``'s journal walk
    over 300,000 entries: 0.55-0.58 s of CPU, as with hex hashes, against 0.63-0.69 s; its log
    walk 0.55-0.61 s against 0.61-0.70 s before). A value that is no hash (edited behind the
    store's back) reads as some other text, never as a hash it is not, and ``verify`` reports
    it."""
    if len(stored) == 32:
        return stored.hex()
    try:
        return stored.decode()
    except UnicodeDecodeError:
        return stored.hex()


sqlite3.register_converter("autonomic_hash", _hash_column)

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


_REFUSALS = (sqlite3.IntegrityError, ConcurrencyError, NotFound)
"""What refuses one commit (a stale version, a lost lease, a duplicate entry) but not its group."""


def _refused(exc: Exception) -> Exception:
    """The outcome a refused commit's caller gets: a duplicate entry as a ``JournalConflict``."""
    if isinstance(exc, sqlite3.IntegrityError):
        return JournalConflict(f"refused, nothing written: {exc}")
    return exc


class SQLiteStore(SqlStore):
    """Runs in a SQLite file. See the module docstring for durability."""

    dialect = "sqlite"
    paramstyle = "named"
    migrations_table = (
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
    )
    migration_columns = "SELECT name FROM pragma_table_info('schema_migrations')"
    hash_hex = 'hash AS "hash [autonomic_hash]"'  # through ``_hash_column``
    journal_select = "SELECT j.seq, j.kind, j.payload, j.hash, j.created_at"

    def __init__(
        self,
        url: str,
        *,
        busy_timeout_ms: int = 10_000,
        create: bool = True,
        readonly: bool = False,
    ) -> None:
        """Open the file; nothing is written into it here (``migrate`` is the first writer).

        Args:
            url: ``sqlite:///path.db`` (see ``parse_sqlite_url``).
            busy_timeout_ms: how long a statement waits for another process's write lock.
            create: create the file if it does not exist. Without it a missing file is refused
                with the path named, so that a mistyped path never becomes a new database.
            readonly: open the file read-only (never created): every write is refused by
                SQLite itself. What the read-only commands of the CLI use.
        """
        super().__init__()
        self.url = url
        self.path, self.synchronous = parse_sqlite_url(url)
        self.readonly = readonly
        self._damage: str | None = None
        """The SQLite error that showed this file damaged: from then on, nothing is written."""
        if not self.path.parent.exists():
            raise StoreUnavailable(
                f"cannot open SQLite database {self.path}: directory {self.path.parent} does not exist",
                hint="create the directory or point --db / AUTONOMIC_DB elsewhere",
            )
        if (readonly or not create) and not self.path.exists():
            raise ConfigError(
                f"no SQLite database at {self.path}",
                hint="check the path (--db / AUTONOMIC_DB); to create a database there: "
                f"autonomic --db {shlex.quote(url)} migrate (or `autonomic demo`)",
            )
        mode = "ro" if readonly else "rwc" if create else "rw"
        try:
            self._db = sqlite3.connect(
                f"{self.path.absolute().as_uri()}?mode={mode}",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
                timeout=busy_timeout_ms / 1000,
                detect_types=sqlite3.PARSE_COLNAMES,  # for ``_hash_column`` only
            )
            self._db.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
            self._db.execute(f"PRAGMA synchronous={self.synchronous}")
            # Reads the file's header, and so refuses a file that is no database at once.
            self._db.execute("PRAGMA schema_version").fetchall()
        except sqlite3.DatabaseError as exc:
            if _is_damage(exc):
                raise self._damaged(str(exc)) from None
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
        except sqlite3.DatabaseError as exc:
            if _is_damage(exc):
                raise self._damaged(str(exc)) from None
            if isinstance(exc, sqlite3.IntegrityError):
                if duplicate is not None and "UNIQUE" in str(exc):
                    raise duplicate(f"refused, nothing written: {exc}") from None
                raise
            if isinstance(exc, sqlite3.OperationalError):
                if "no such table" in str(exc):
                    raise self._no_schema(str(self.path)) from None
                raise StoreUnavailable(f"SQLite database {self.path}: {exc}") from exc
            raise

    def _damaged(self, detail: str) -> StoreDamaged:
        """The error for a damaged file; remembered, so that no write is attempted after it."""
        self._damage = detail
        path = shlex.quote(str(self.path))
        if detail == "file is not a database":
            return StoreDamaged(
                f"cannot open SQLite database {self.path}: {detail}",
                hint="is it a SQLite file? If it is, its header is damaged: check it with "
                f"`sqlite3 {path} 'PRAGMA integrity_check'` and restore it from a backup; "
                "or point --db / AUTONOMIC_DB at another path",
            )
        return StoreDamaged(
            f"SQLite database {self.path} is damaged: {detail}; autonomic writes nothing into it",
            hint=f"check it with `sqlite3 {path} 'PRAGMA integrity_check'` and restore it from "
            f"a backup (`sqlite3 {path} .recover` saves what is still readable)",
        )

    @contextmanager
    def _immediate(self, duplicate: type[Exception] | None = None) -> Iterator[sqlite3.Cursor]:
        """A write transaction that holds the database's write lock from its first statement."""
        if self._damage is not None:
            raise self._damaged(self._damage)
        if self.readonly:
            raise self._read_only()
        with self._driver_errors(duplicate):
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                if self._db.in_transaction:  # SQLite may have rolled it back itself
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

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Execute]:
        with self._immediate() as cur:

            async def execute(sql: str, params: Params | None) -> list[Row]:
                return cur.execute(sql, () if params is None else params).fetchall()

            yield execute

    def _script(self, script: str) -> list[str]:
        return _split_sql(script)  # sqlite3 runs one statement per call

    # -- what the file holds (see ``schema.py``) --------------------------------------------------

    async def _catalog(self) -> tuple[str, frozenset[str]]:
        rows = await self._read(
            "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
            "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
            {},
        )
        return f"SQLite database {self.path}", frozenset(str(row[0]) for row in rows)

    async def _check_integrity(self) -> None:
        """``PRAGMA quick_check`` before the first write: every page of the file is read once.

        A damaged page is found wherever it is, not only when a statement happens to touch it,
        so that nothing is written into a damaged file. Measured at about 3 ms a megabyte
        (0.5 s for a 160 MB file); readers do not pay it, writers pay it once when they open.
        """
        with self._driver_errors():
            rows = self._db.execute("PRAGMA quick_check").fetchall()
        problems = [
            line
            for (text,) in rows
            for line in str(text).splitlines()
            if line and not line.startswith("*** ")
        ]
        if problems != ["ok"]:
            more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
            raise self._damaged(f"PRAGMA quick_check found: {problems[0]}{more}")

    async def _start_writing(self) -> None:
        """WAL mode (kept in the file): readers and the one writer no longer block each other."""
        with self._driver_errors():
            self._db.execute("PRAGMA journal_mode=WAL")

    # -- runs -----------------------------------------------------------------------------------

    async def create_run(
        self,
        run: Run,
        entries: Sequence[PackedEntry],
        *,
        outbox: Sequence[Event] = (),
        processed: Processed | None = None,
        audit: AuditNote | None = None,
    ) -> Run:
        with self._immediate(RunExists) as cur:
            cur.execute(self.sql.insert_run, run_params(run))
            self._append(cur, entries, run.created_at)
            self._write_outbox(cur, self._outbox_rows(run.id, outbox, run.created_at))
            if processed is not None:
                cur.execute(
                    self.sql.insert_inbox, self._inbox_params(processed, run.id, run.created_at)
                )
            self._audit_append(cur, self._anchor(run.id, entries, audit), run.created_at)
        return run

    def _write_outbox(self, cur: sqlite3.Cursor, rows: Sequence[dict[str, Any]]) -> None:
        """The outbox rows of a commit, in its transaction (a no-op without events)."""
        if rows:
            cur.executemany(self.sql.insert_outbox, rows)

    def _audit_append(self, cur: sqlite3.Cursor, anchor: Anchor | None, now: float) -> int:
        """Chain ``anchor`` to the log's last record, inside the caller's transaction: the
        write lock it holds (``BEGIN IMMEDIATE``) is the log's serialisation point."""
        if anchor is None:
            return -1
        pos, stored = cur.execute(_AUDIT_HEAD).fetchone()
        head = _hex(stored)
        pos += 1
        cur.execute(
            "INSERT INTO audit_log VALUES (?, ?, ?, ?, ?, ?)",
            (
                pos,
                anchor.kind,
                anchor.run_id,
                anchor.body,
                bytes.fromhex(record_hash(head, pos, anchor.kind, anchor.digest)),
                now,
            ),
        )
        return int(pos)

    async def _append_record(self, make: Callable[[int, str], Anchor]) -> int:
        with self._immediate() as cur:
            pos, head = cur.execute(_AUDIT_HEAD).fetchone()
            return self._audit_append(cur, make(int(pos), _hex(head)), time.time())

    def _append(self, cur: sqlite3.Cursor, entries: Sequence[PackedEntry], now: float) -> None:
        blobs = blob_rows(entries, now)
        if blobs:
            cur.executemany("INSERT OR IGNORE INTO blobs VALUES (?, ?, ?, ?)", blobs)
        cur.executemany("INSERT INTO journal VALUES (?, ?, ?, ?, ?, ?)", journal_rows(entries))

    async def _journal_entries(self, run_id: str, sql: str, params: Params) -> list[Entry]:
        """Two statements, the entries and then their blobs: no round trips to save here."""
        with self._driver_errors():
            rows = self._db.execute(sql, params).fetchall()
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
        if len(group) == 1:  # the usual group of a sequential worker
            self._commit_alone(group[0])
            return
        outcomes: list[int | Exception] = []
        try:
            with self._immediate() as cur:
                for request in group:
                    cur.execute("SAVEPOINT one_commit")
                    try:
                        outcomes.append(self._commit_one(cur, request))
                    except _REFUSALS as exc:
                        cur.execute("ROLLBACK TO one_commit")
                        outcomes.append(_refused(exc))
                    cur.execute("RELEASE one_commit")
        except Exception as exc:  # the transaction itself failed: nothing of the group landed
            for request in group:
                request.settle(exc)
            return
        for request, outcome in zip(group, outcomes, strict=True):
            request.settle(outcome)  # a cancelled caller's commit landed regardless

    def _commit_alone(self, request: CommitRequest) -> None:
        """A group of one: no savepoint, since a refusal has no other commit to spare; the
        transaction is rolled back instead (``_immediate``), with the same outcome."""
        outcome: int | Exception
        try:
            with self._immediate() as cur:
                outcome = self._commit_one(cur, request)
        except _REFUSALS as exc:
            outcome = _refused(exc)
        except Exception as exc:  # the transaction itself failed: nothing landed
            outcome = exc
        request.settle(outcome)  # a cancelled caller's commit landed regardless

    def _commit_one(self, cur: sqlite3.Cursor, request: CommitRequest) -> int:
        changes = request.changes
        update = _update_statement(
            changes.release_lease,
            changes.lease_expires_at is not None,
            changes.status is not None,
            changes.set_output,
            changes.metadata is not None,
            changes.agent_version is not None,
        )
        updated = cur.execute(update, request.params).fetchone()
        if updated is None:
            current = cur.execute(self.sql.run_version, request.params).fetchone()
            raise self._refusal(request, current)
        self._append(cur, request.entries, request.now)
        self._audit_append(cur, request.anchor, request.now)
        for approval in request.approvals:
            cur.execute(*self._approval_write(approval, request.now))
            self._approval_written(approval, cur.rowcount)
        self._write_outbox(cur, request.outbox)
        return int(updated[0])

    async def close(self) -> None:
        self._db.close()


@functools.cache
def _update_statement(
    release_lease: bool, lease: bool, status: bool, output: bool, metadata: bool, repin: bool
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
    if repin:
        sets.append("agent_version = :agent_version")
    return f"UPDATE runs SET {', '.join(sets)} WHERE {COMMIT_GUARD} RETURNING version"


def _is_damage(exc: sqlite3.Error) -> bool:
    """Whether SQLite says the file is damaged (a corrupt page, or no database header)."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF  # the primary code of an extended one
    return code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


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
