"""The demo bank: a SQLite file with a ledger, a bank statement that disagrees with it, and the
tables the agent's write tools touch."""

from __future__ import annotations

import sqlite3
from pathlib import Path

ACCOUNT = "1010-operating"
DATE = "2026-11-20"

# (reference, description, amount in cents)
LEDGER = [
    ("INV-1001", "Customer payment Acme Corp", 1_250_000),
    ("INV-1002", "Customer payment Globex", 830_000),
    ("PAY-2001", "Supplier Initech", -412_500),
    ("PAY-2002", "Payroll November", -2_100_000),
    ("CHK-3001", "Cheque 3001 to Umbrella Ltd", -75_000),
    ("INV-1003", "Customer payment Hooli", 199_900),
]
STATEMENT = [
    ("INV-1001", "ACME CORP TRANSFER", 1_250_000),
    ("INV-1002", "GLOBEX SEPA", 803_000),
    ("PAY-2001", "INITECH DIRECT DEBIT", -412_500),
    ("PAY-2002", "PAYROLL RUN", -2_100_000),
    ("INV-1003", "HOOLI PAYMENT", 199_900),
    ("FEE-NOV", "ACCOUNT MAINTENANCE FEE", -2_500),
    ("INT-NOV", "INTEREST CREDIT", 1_337),
]


TABLES = ("adjustments", "ledger", "reports", "statement")
"""The tables the agent reads and writes: a file without them is not a bank database."""


def connect_bank(path: Path) -> sqlite3.Connection:
    """Open the existing bank at ``path`` for reading; never creates a file.

    Not ``mode=ro``: a process killed inside a write transaction (which the crash tests and any
    real fleet do) leaves a hot rollback journal, and a read-only connection cannot roll it back,
    so every later read fails with "attempt to write a readonly database" until some writer opens
    the file. Opening read-write lets the first reader restore the last committed state; readers
    that must not write say so with ``PRAGMA query_only``.
    """
    db = sqlite3.connect(f"file:{path}?mode=rw", uri=True)
    db.execute("PRAGMA query_only = ON")
    return db


def bank_problem(path: Path) -> str | None:
    """What makes ``path`` unusable as the bank database (``None``: nothing). Checking never
    creates a file nor changes its data (``connect_bank``)."""
    if not path.is_file():
        return "no such file"
    try:
        db = connect_bank(path)
        try:
            found = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        finally:
            db.close()
    except sqlite3.Error as exc:
        return f"not a SQLite database ({exc})"
    missing = [t for t in TABLES if t not in found]
    if missing:
        return f"not a bank database (no table {', '.join(missing)})"
    return None


def create_bank(path: Path) -> Path:
    """Create (or recreate) the demo bank at ``path``."""
    if path.exists():
        path.unlink()
    db = sqlite3.connect(path)
    with db:
        db.executescript(
            """
            CREATE TABLE ledger (reference TEXT PRIMARY KEY, account TEXT, date TEXT,
                                 description TEXT, amount_cents INTEGER);
            CREATE TABLE statement (reference TEXT PRIMARY KEY, account TEXT, date TEXT,
                                    description TEXT, amount_cents INTEGER);
            CREATE TABLE adjustments (idempotency_key TEXT PRIMARY KEY, account TEXT,
                                      reference TEXT, amount_cents INTEGER, reason TEXT);
            CREATE TABLE reports (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT,
                                  title TEXT, body TEXT);
            """
        )
        db.executemany(
            "INSERT INTO ledger VALUES (?, ?, ?, ?, ?)",
            [(r, ACCOUNT, DATE, d, a) for r, d, a in LEDGER],
        )
        db.executemany(
            "INSERT INTO statement VALUES (?, ?, ?, ?, ?)",
            [(r, ACCOUNT, DATE, d, a) for r, d, a in STATEMENT],
        )
    db.close()
    return path
