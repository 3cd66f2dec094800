"""One identity across the API and the CLI: both record who acted as ``name@tenant``, so a run
started by the key ``alice`` of tenant ``acme`` cannot be approved by alice through the CLI either
(``--as alice``, ``--as alice@acme``, any case), and what the CLI records reads like the API's."""

import asyncio
import os
import subprocess
import sys

from served import serving

from autonomic.core.principal import principal, same_principal

CLI = [sys.executable, "-m", "autonomic.cli"]


def cli(*args: str, db: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "AUTONOMIC_DB"} | {"COLUMNS": "250"}
    return subprocess.run(
        [*CLI, "--db", db, *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_the_principal_rule():
    assert principal("alice", "acme") == "alice@acme"
    assert principal("alice@acme", "globex") == "alice@acme"  # a qualified name is kept
    assert same_principal("ALICE@Acme", "alice", "acme")  # a bare requester: the run's tenant
    assert not same_principal("alice@globex", "alice", "acme")
    assert not same_principal("alicia", "alice", "acme")


def test_a_run_started_over_the_api_is_not_approved_by_its_requester_from_the_cli(sqlite_url):
    async def start():
        async with serving(sqlite_url) as s:
            alice = await s.key("acme", "approver", "alice")
            # the approval's run was started by alice@acme (as the API records it)
            _, approval2 = await s.waiting_run("acme", requester="alice@acme")
            own = await s.client.post(f"/approvals/{approval2.id}/approve", json={}, headers=alice)
            assert own.status_code == 403
            return approval2.id

    approval_id = asyncio.run(start())
    for who in ("alice", "alice@acme", "Alice@ACME"):
        refused = cli("approve", approval_id, "--as", who, db=sqlite_url)
        assert refused.returncode == 2, (who, refused.stdout, refused.stderr)
        assert "cannot approve its actions" in refused.stderr
    approved = cli("approve", approval_id, "--as", "bob", "--reason", "checked", db=sqlite_url)
    assert approved.returncode == 0, approved.stderr
    assert "by bob@acme" in approved.stdout

    async def check():
        async with serving(sqlite_url) as s:
            decided = await s.service.store.get_approval(approval_id)
            assert decided.decided_by == ("bob@acme",)
            # and bob, holding a key of acme, is the same person to the API
            bob = await s.key("acme", "approver", "bob")
            answer = await s.client.get(f"/approvals/{approval_id}", headers=bob)
            assert answer.json()["decided_by"] == ["bob@acme"]

    asyncio.run(check())
