"""Tampering with a store's journal and audit log behind its back, as someone with database
access would: the append-only triggers dropped, rows rewritten, and the run's hash chain
recomputed (or not) so that the journal checks by itself. What ``autonomic audit verify`` must
catch, each with the right position and kind (``tests/audit/test_tampering.py``, the audit
benchmark).

A tampering is undone exactly (``Tamperer.restore``), so one seeded database serves many trials.
"""

from __future__ import annotations

import random
import sqlite3
from dataclasses import dataclass
from typing import Any

from autonomic.adapters.store.sqlite import parse_sqlite_url
from autonomic.core.canonical import canonical_json
from autonomic.core.journal import GENESIS_HASH, chain_hash
from autonomic.core.verification import BreakKind, payload_address

JOURNAL_KINDS = ("edit", "insert", "delete", "truncate", "reorder", "run delete")
LOG_KINDS = ("log edit", "log delete", "log run moved")

JRow = tuple[str, int, str, str, str | bytes, float]
"""A journal row: run_id, seq, kind, payload, hash, created_at; the hash as stored (its raw bytes
since issue 17, hex text before: ``adapters/store/rows.py``), so that ``restore`` puts back the
very row. A chain the tamperer recomputes is written as hex on SQLite (a file may hold both
forms) and as bytes on PostgreSQL (whose column is ``bytea``)."""


@dataclass(frozen=True, slots=True)
class Tampering:
    """What was done, and what verify must say: the kind and where."""

    action: str
    run_id: str | None
    expected: BreakKind
    position: int


class Tamperer:
    """Raw access to one database with the append-only triggers dropped."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.postgres = not url.startswith("sqlite:")
        if self.postgres:
            import psycopg

            self._pg = psycopg.connect(url, autocommit=True)
        else:
            path, _ = parse_sqlite_url(url)
            self._db = sqlite3.connect(path, isolation_level=None)
        self._saved: (
            tuple[str | None, list[JRow], list[tuple[Any, ...]], list[tuple[Any, ...]]] | None
        ) = None

    def q(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.postgres:
            cur = self._pg.execute(sql.replace("?", "%s"), params)
            return [tuple(r) for r in cur.fetchall()] if cur.description else []
        return [tuple(r) for r in self._db.execute(sql, params).fetchall()]

    def drop_triggers(self) -> None:
        if self.postgres:
            self.q("DROP TRIGGER IF EXISTS journal_append_only ON journal")
            self.q("DROP TRIGGER IF EXISTS journal_no_truncate ON journal")
            self.q("DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log")
        else:
            for name in (
                "journal_append_only_update",
                "journal_append_only_delete",
                "audit_log_append_only_update",
                "audit_log_append_only_delete",
            ):
                self.q(f"DROP TRIGGER IF EXISTS {name}")

    def close(self) -> None:
        if self.postgres:
            self._pg.close()
        else:
            self._db.close()

    # -- one tampering ---------------------------------------------------------------------------

    def runs(self) -> dict[str, int]:
        return {
            str(r): int(n)
            for r, n in self.q("SELECT run_id, count(*) FROM journal GROUP BY run_id")
        }

    def journal(self, run_id: str) -> list[JRow]:
        return [
            (str(r[0]), int(r[1]), str(r[2]), str(r[3]), _stored(r[4]), float(r[5]))
            for r in self.q(
                "SELECT run_id, seq, kind, payload, hash, created_at FROM journal "
                "WHERE run_id = ? ORDER BY seq",
                (run_id,),
            )
        ]

    def tamper(self, rng: random.Random, action: str) -> Tampering:
        """Do ``action`` to a random run (or log record); remember how to undo it."""
        if action in LOG_KINDS:
            return self._tamper_log(rng, action)
        runs = self.runs()
        run_id = rng.choice(sorted(r for r, n in runs.items() if n >= 3))
        rows = self.journal(run_id)
        run_row = self.q("SELECT * FROM runs WHERE id = ?", (run_id,))
        self._saved = (run_id, rows, run_row, [])
        n = len(rows)
        new = list(rows)
        recompute = rng.random() < 0.5  # a careful attacker remakes the run's chain too
        if action == "edit":
            i = rng.randint(1, n)
            r = new[i - 1]
            new[i - 1] = (r[0], r[1], r[2], canonical_json({"forged": rng.random()}), r[4], r[5])
            result = Tampering(action, run_id, BreakKind.EDITED, i)
        elif action == "insert":
            i = rng.randint(1, n + 1)
            forged = (
                run_id,
                i,
                "model.response",
                canonical_json({"forged": rng.random()}),
                "",
                0.0,
            )
            new = [*new[: i - 1], forged, *new[i - 1 :]]
            result = Tampering(action, run_id, BreakKind.INSERTED, i)
        elif action == "delete":
            i = rng.randint(1, n - 1)
            del new[i - 1]
            if rng.random() < 0.5:  # leave the gap, or close it
                self._write(run_id, new, renumber=False)
                return Tampering(action, run_id, BreakKind.DELETED, i)
            result = Tampering(action, run_id, BreakKind.DELETED, i)
        elif action == "truncate":
            k = rng.randint(1, n - 1)
            new = new[:k]
            result = Tampering(action, run_id, BreakKind.TRUNCATED, k + 1)
        elif action == "reorder":
            i, j = sorted(rng.sample(range(1, n + 1), 2))
            new[i - 1], new[j - 1] = new[j - 1], new[i - 1]
            result = Tampering(action, run_id, BreakKind.REORDERED, i)
        elif action == "run delete":
            self.q("DELETE FROM journal WHERE run_id = ?", (run_id,))
            self.q("DELETE FROM runs WHERE id = ?", (run_id,))
            return Tampering(action, run_id, BreakKind.RUN_DELETED, 1)
        else:
            raise ValueError(f"unknown tampering {action!r}")
        self._write(run_id, new, renumber=True, recompute=recompute)
        return result

    def _write(
        self, run_id: str, rows: list[JRow], *, renumber: bool, recompute: bool = False
    ) -> None:
        out: list[JRow] = []
        prev = GENESIS_HASH
        for index, (rid, seq, kind, payload, stored, at) in enumerate(rows, start=1):
            s = index if renumber else seq
            if recompute:
                stored = prev = chain_hash(prev, s, kind, payload_address(payload))
            stored = stored or "0" * 64
            if self.postgres and isinstance(stored, str):  # its column is ``bytea``
                stored = bytes.fromhex(stored)
            out.append((rid, s, kind, payload, stored, at))
        self.q("DELETE FROM journal WHERE run_id = ?", (run_id,))
        for row in out:
            self.q("INSERT INTO journal VALUES (?, ?, ?, ?, ?, ?)", row)

    def _tamper_log(self, rng: random.Random, action: str) -> Tampering:
        (top,) = self.q("SELECT max(pos) FROM audit_log")[0]
        pos = rng.randint(1, int(top) - 1)  # not the last: that is what checkpoints are for
        row = self.q("SELECT * FROM audit_log WHERE pos = ?", (pos,))
        self._saved = (None, [], [], row)
        if action == "log edit":
            self.q("UPDATE audit_log SET body = ? WHERE pos = ?", ('{"forged":true}', pos))
            return Tampering(action, None, BreakKind.LOG_EDITED, pos)
        if action == "log run moved":  # an anchor said to be another run's: its record covers it
            anchors = self.q(
                "SELECT pos, run_id FROM audit_log WHERE kind = 'anchor' AND pos < ? ORDER BY pos",
                (top,),
            )
            pos, run_id = anchors[rng.randrange(len(anchors))]
            self._saved = (None, [], [], self.q("SELECT * FROM audit_log WHERE pos = ?", (pos,)))
            other = next(r for r in self.runs() if r != run_id)
            self.q("UPDATE audit_log SET run_id = ? WHERE pos = ?", (other, pos))
            return Tampering(action, None, BreakKind.LOG_EDITED, pos)
        self.q("DELETE FROM audit_log WHERE pos = ?", (pos,))
        return Tampering(action, None, BreakKind.LOG_DELETED, pos)

    def restore(self) -> None:
        """Undo the last tampering, row for row."""
        assert self._saved is not None
        run_id, rows, run_row, log_rows = self._saved
        if run_id is not None:
            self.q("DELETE FROM journal WHERE run_id = ?", (run_id,))
            for row in rows:
                self.q("INSERT INTO journal VALUES (?, ?, ?, ?, ?, ?)", row)
            if not self.q("SELECT 1 FROM runs WHERE id = ?", (run_id,)):
                marks = ", ".join("?" * len(run_row[0]))
                self.q(f"INSERT INTO runs VALUES ({marks})", run_row[0])
        for row in log_rows:
            self.q("DELETE FROM audit_log WHERE pos = ?", (row[0],))
            self.q("INSERT INTO audit_log VALUES (?, ?, ?, ?, ?, ?)", row)
        self._saved = None


def _stored(value: object) -> str | bytes:
    """A journal row's hash as the store keeps it: raw bytes, or hex text."""
    return value if isinstance(value, bytes) else str(value)
