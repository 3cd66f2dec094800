"""The reconciliation computes its differences as code in the sandbox, with the same report as the
in-process tool, classified LOW; where the sandbox is unavailable it falls back to the tool."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from autonomic.bootstrap import build_model
from autonomic.core.journal import EntryKind
from autonomic.core.run import RunStatus
from autonomic.engine.agent import AgentRegistry
from autonomic.engine.executor import Engine
from autonomic.examples.reconciliation.agent import reconciliation_agent, sandbox_ready
from autonomic.examples.reconciliation.bank import ACCOUNT, DATE, create_bank
from autonomic.governance.approvals import ApprovalDesk


async def _reconcile(store: Any, tmp_path: Path, compute: str) -> tuple[Any, list[Any]]:
    engine = Engine(store, AgentRegistry([reconciliation_agent()]), build_model)
    bank = create_bank(tmp_path / f"bank-{compute}.db")
    task = json.dumps({"account": ACCOUNT, "date": DATE, "compute": compute})
    run = await engine.run("reconciliation", task, metadata={"bank": str(bank)})
    desk = ApprovalDesk(store)
    while run.status is RunStatus.WAITING_FOR_HUMAN:
        for approval in await store.list_approvals(run_id=run.id, status=None, limit=100):
            if not approval.status.final:
                await desk.approve(approval.id, by="controller", reason="test")
        run = await engine.run_to_end(run.id)
    return run, await store.load_journal(run.id)


def _tools(entries: list[Any]) -> list[str]:
    return [e.payload["tool"] for e in entries if e.kind is EntryKind.TOOL_INTENT]


def test_sandboxed_differences_give_the_identical_report(
    sqlite_url: str, make_store: Any, tmp_path: Path
) -> None:
    ready, why = sandbox_ready()
    if not ready:
        pytest.skip(f"sandbox unavailable on this host: {why}")

    async def main() -> None:
        store = await make_store(sqlite_url)
        try:
            sandboxed, entries = await _reconcile(store, tmp_path, "sandbox")
            tools = _tools(entries)
            assert "python_exec" in tools
            assert "compute_differences" not in tools
            [decision] = [
                e.payload
                for e in entries
                if e.kind is EntryKind.DECISION and e.payload["tool"] == "python_exec"
            ]
            assert decision["risk"] == "LOW"
            assert decision["verdict"] == "allow"
            fallback, entries = await _reconcile(store, tmp_path, "tool")
            assert "python_exec" not in _tools(entries)
            assert "compute_differences" in _tools(entries)
            assert sandboxed.status is RunStatus.COMPLETED
            assert sandboxed.output == fallback.output
            assert "reconciled" in str(sandboxed.output)
        finally:
            await store.close()

    asyncio.run(main())


def test_an_unknown_sandbox_backend_is_reported_not_raised() -> None:
    ready, why = sandbox_ready({"AUTONOMIC_SANDBOX": "nope"})
    assert not ready
    assert "nope" in why
