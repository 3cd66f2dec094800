"""The reconciliation agent's tools.

``sql_query`` is read-only twice over: the database is opened read-only and only one SELECT (or WITH)
statement is accepted. ``post_adjustment`` is idempotent: it stores the call's idempotency key with
the entry, so a re-run after a crash posts nothing twice. ``file_report`` is deliberately *not*
idempotent (each call files another report), which is what makes a crash in the middle of it "in
doubt". ``cleanup`` deletes the imported statement lines: irreversible, so the demo's policy
classifies it HIGH and it is always blocked - its code never runs under that policy.

Operational policy (timeouts, retries, data classification, reversibility) is not here: it is in
``policy.yaml`` next to this file.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

from autonomic.errors import InvalidInput
from autonomic.examples.reconciliation.bank import connect_bank
from autonomic.tools.contract import ToolContext, tool

_READ_ONLY = re.compile(r"^\s*(select|with)\b", re.IGNORECASE)
MAX_ROWS = 500


def _bank(ctx: ToolContext) -> Path:
    path = ctx.metadata.get("bank")
    if not isinstance(path, str):
        raise InvalidInput("this run has no bank configured (metadata.bank)")
    return Path(path)


@tool(idempotent=True)
def sql_query(query: str, ctx: ToolContext) -> dict[str, Any]:
    """Run one read-only SQL SELECT against the bank database and return its rows."""
    if not _READ_ONLY.match(query) or ";" in query.strip().rstrip(";"):
        raise InvalidInput("only a single SELECT (or WITH ... SELECT) statement is allowed")
    db = connect_bank(_bank(ctx))
    try:
        cur = db.execute(query)
        columns = [d[0] for d in cur.description or ()]
        rows = cur.fetchmany(MAX_ROWS + 1)
    except sqlite3.Error as exc:
        raise InvalidInput(f"SQL error: {exc}") from None
    finally:
        db.close()
    return {
        "columns": columns,
        "rows": [list(r) for r in rows[:MAX_ROWS]],
        "truncated": len(rows) > MAX_ROWS,
    }


@tool(idempotent=True)
def compute_differences(
    ledger: list[dict[str, Any]], statement: list[dict[str, Any]]
) -> dict[str, Any]:
    """Match ledger and statement lines by reference; list what is missing or differs."""
    book = {str(r["reference"]): int(r["amount_cents"]) for r in ledger}
    bank = {str(r["reference"]): int(r["amount_cents"]) for r in statement}
    missing_in_ledger = [
        {"reference": ref, "amount_cents": bank[ref]} for ref in sorted(bank) if ref not in book
    ]
    missing_in_statement = [
        {"reference": ref, "amount_cents": book[ref]} for ref in sorted(book) if ref not in bank
    ]
    mismatches = [
        {
            "reference": ref,
            "ledger_cents": book[ref],
            "statement_cents": bank[ref],
            "difference_cents": bank[ref] - book[ref],
        }
        for ref in sorted(book)
        if ref in bank and book[ref] != bank[ref]
    ]
    return {
        "ledger_total_cents": sum(book.values()),
        "statement_total_cents": sum(bank.values()),
        "missing_in_ledger": missing_in_ledger,
        "missing_in_statement": missing_in_statement,
        "amount_mismatches": mismatches,
    }


@tool(idempotent=True)
def post_adjustment(
    account: str, reference: str, amount_cents: int, reason: str, ctx: ToolContext
) -> dict[str, Any]:
    """Post an adjusting ledger entry. Safe to repeat: the idempotency key makes it post once."""
    db = sqlite3.connect(_bank(ctx))
    try:
        with db:
            cur = db.execute(
                "INSERT OR IGNORE INTO adjustments VALUES (?, ?, ?, ?, ?)",
                (ctx.idempotency_key, account, reference, amount_cents, reason),
            )
            posted = cur.rowcount == 1
            if not posted:
                known = db.execute(
                    "SELECT account, reference, amount_cents FROM adjustments "
                    "WHERE idempotency_key = ?",
                    (ctx.idempotency_key,),
                ).fetchone()
                if known != (account, reference, amount_cents):
                    raise InvalidInput(
                        f"idempotency key {ctx.idempotency_key} was used for another adjustment "
                        f"{known}; refusing to treat this one as its duplicate",
                        hint="a repeated call must carry the same arguments as the first",
                    )
            if posted:
                db.execute(
                    "INSERT INTO ledger VALUES (?, ?, (SELECT MAX(date) FROM ledger), ?, ?)",
                    (f"ADJ-{reference}", account, f"Adjustment: {reason}", amount_cents),
                )
    finally:
        db.close()
    return {"adjustment": f"ADJ-{reference}", "amount_cents": amount_cents, "newly_posted": posted}


@tool(idempotent=False)
def file_report(title: str, body: str, ctx: ToolContext) -> dict[str, Any]:
    """File the reconciliation report with the controller. Each call files one more report."""
    db = sqlite3.connect(_bank(ctx))
    try:
        with db:
            cur = db.execute(
                "INSERT INTO reports (run_id, title, body) VALUES (?, ?, ?)",
                (ctx.run_id, title, body),
            )
    finally:
        db.close()
    return {"report_id": cur.lastrowid, "filed": True}


@tool(idempotent=True, reversible=False)
def cleanup(table: str, ctx: ToolContext) -> dict[str, Any]:
    """Delete the imported rows of a staging table once reconciled. Cannot be undone."""
    if table != "statement":
        raise InvalidInput("only the imported statement can be cleaned up")
    db = sqlite3.connect(_bank(ctx))
    try:
        with db:
            deleted = db.execute("DELETE FROM statement").rowcount
    finally:
        db.close()
    return {"deleted": deleted}
