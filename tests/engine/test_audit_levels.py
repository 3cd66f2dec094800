"""A tool contract's ``audit_level`` decides what the audit log keeps of its calls' arguments and
results - everything, their sha256 only, or nothing - while the journal keeps them whole (a
replay needs them); on every store, and the run's log verifies."""

import asyncio
import hashlib

from autonomic.adapters.model.scripted import ScriptedModel
from autonomic.audit.verify import verify_store
from autonomic.bootstrap import build_store
from autonomic.core.audit import anchor_summary
from autonomic.core.canonical import canonical_json
from autonomic.core.journal import EntryKind
from autonomic.core.run import RunStatus
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.executor import Engine
from autonomic.tools.contract import tool

SECRET_ARG = "acct-4111-1111"


@tool(idempotent=True, audit="full")
def lookup(account: str) -> str:
    """Look up an account."""
    return f"found {account}"


@tool(idempotent=True)  # basic, the default
def score(account: str) -> int:
    """Score an account."""
    return 7


@tool(idempotent=True, audit="none")
def note(account: str) -> str:
    """Keep a private note."""
    return f"noted {account}"


def _sha(value):
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def test_each_audit_level_keeps_what_it_says(store_url):
    turns = [
        {"tool_calls": [{"name": n, "arguments": {"account": SECRET_ARG}}]}
        for n in ("lookup", "score", "note")
    ] + [{"content": "done"}]

    async def main():
        store = build_store(store_url)
        await store.migrate()
        agent = Agent(name="auditor", instructions="x", tools=(lookup, score, note))
        engine = Engine(store, AgentRegistry([agent]), lambda spec: ScriptedModel(turns))
        run = await engine.start("auditor", "check", requester="rita")
        final = await engine.run_to_end(run.id)
        entries = await store.load_journal(run.id)
        log = await store.scan_audit_log()
        report = await verify_store(store)
        await store.close()
        return final, entries, log, report

    final, entries, log, report = asyncio.run(main())
    assert final.status is RunStatus.COMPLETED
    assert report.ok, report.breaks
    anchored = [
        e
        for _, kind, run_id, body, _, _ in log
        if kind == "anchor"
        for e in anchor_summary(body, run_id)["entries"]
    ]
    by = {(e["kind"], e.get("tool")): e for e in anchored}
    args = {"account": SECRET_ARG}
    assert by[("tool.intent", "lookup")]["arguments"] == args
    assert by[("tool.result", "lookup")]["output"] == f"found {SECRET_ARG}"
    assert by[("tool.intent", "score")]["arguments_sha256"] == _sha(args)
    assert by[("tool.result", "score")]["output_sha256"] == _sha(7)
    assert "arguments" not in by[("tool.intent", "score")]
    for kind in ("tool.intent", "tool.result"):
        kept = by[(kind, "note")]
        assert kept["audit"] == "none"
        assert not {"arguments", "arguments_sha256", "output", "output_sha256"} & set(kept)
    notes = [body for _, kind, _, body, _, _ in log if kind == "anchor" and '"note"' in body]
    assert notes
    assert all(f"noted {SECRET_ARG}" not in body for body in notes)
    # every journal entry is anchored, in order, with its chain hash
    assert [(e["seq"], e["hash"]) for e in anchored] == [(e.seq, e.hash) for e in entries]
    # the journal keeps the arguments whole whatever the level
    intents = [e for e in entries if e.kind is EntryKind.TOOL_INTENT]
    assert all(e.payload["arguments"] == args for e in intents)
    # who asked for the run is in the log
    started = [
        anchor_summary(body, rid).get("act") for _, kind, rid, body, _, _ in log if kind == "anchor"
    ]
    assert {"act": "run.start", "by": "rita", "detail": {"agent": "auditor"}} in started
