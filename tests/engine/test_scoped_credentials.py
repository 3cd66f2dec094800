"""A canary secret given to a tool through the credentials port never appears in any stored byte
(the SQLite file, a pg_dump of the schema), in the logs, in what the model reads, or in a sandbox's
environment - even when the tool tries to return it and the worker's environment holds it."""

import asyncio
import json
import logging
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from autonomic.adapters.credentials.env import EnvSecrets
from autonomic.adapters.model.scripted import FunctionModel
from autonomic.bootstrap import build_store
from autonomic.core.messages import ModelResponse, ToolCall
from autonomic.core.run import RunStatus
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.executor import Engine
from autonomic.ports.credentials import REDACTED, CredentialIssuer
from autonomic.testing.sandbox import require_bwrap
from autonomic.tools.contract import ToolContext, tool

CANARY = "canary-7f3c9e1d-do-not-leak"
seen: dict[str, object] = {}


@tool(idempotent=True, credentials=["bank"])
async def fetch_balance(account: str, ctx: ToolContext) -> dict[str, object]:
    """Read a balance with the bank credential; careless on purpose: logs and returns it."""
    credential = ctx.credentials["bank"]
    secret = credential.reveal()
    seen["scope"] = credential.scope
    logging.getLogger("tool.careless").warning("using %r for %s", credential, account)
    env = {}
    if "sandbox" in seen:
        from autonomic.ports.sandbox import Execution

        result = await seen["sandbox"].execute(  # type: ignore[attr-defined]
            Execution(code="import os, json; print(json.dumps(dict(os.environ)))")
        )
        env = {"sandbox_env": result.stdout, "sandbox_exit": result.exit_code}
    return {"account": account, "balance": 10, "echo": f"token={secret}", **env}


@tool(idempotent=True)
def no_secret_needed(x: int) -> int:
    return x


def _model(messages_seen: list[str]):
    def policy(messages, tools):
        messages_seen.append(json.dumps([m.to_dict() for m in messages]))
        if len(messages) < 3:
            return ModelResponse(
                content=None,
                tool_calls=(ToolCall("c1", "fetch_balance", json.dumps({"account": "A-1"})),),
            )
        return ModelResponse(content="balance is 10")

    return FunctionModel(policy, name="canary")


def _engine(store, messages_seen):
    agent = Agent(
        name="bookkeeper", instructions="read balances", tools=(fetch_balance, no_secret_needed),
        model="function:canary",
    )  # fmt: skip
    model = _model(messages_seen)
    issuer = CredentialIssuer(EnvSecrets())
    return Engine(store, AgentRegistry([agent]), lambda spec: model, credentials=issuer)


def _pg_dump(url: str) -> bytes:
    parsed = urlparse(url)
    schema = parse_qs(parsed.query)["options"][0].removeprefix("-csearch_path=")
    base = url.split("?")[0]
    return subprocess.run(
        ["pg_dump", "--schema", schema, "--data-only", base],
        check=True, capture_output=True, timeout=120,
    ).stdout  # fmt: skip


@pytest.mark.parametrize(
    "store_kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_the_canary_never_leaves_the_tool(store_kind, request, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("AUTONOMIC_SECRET_BANK", CANARY)  # the worker's own environment holds it
    caplog.set_level(logging.DEBUG)
    url = request.getfixturevalue({"sqlite": "sqlite_url", "postgres": "pg_url"}[store_kind])
    messages_seen: list[str] = []
    seen.clear()
    if store_kind == "sqlite":
        require_bwrap()
        from autonomic.adapters.sandbox.namespace import NamespaceSandbox

        seen["sandbox"] = NamespaceSandbox()

    async def go():
        store = build_store(url)
        await store.migrate()
        run = await _engine(store, messages_seen).run("bookkeeper", "read A-1", tenant="acme")
        entries = await store.load_journal(run.id)
        await store.close()
        if "sandbox" in seen:
            await seen["sandbox"].close()  # type: ignore[attr-defined]
        return run, entries

    run, entries = asyncio.run(go())
    assert run.status is RunStatus.COMPLETED, run.status_reason
    scope = seen["scope"]
    assert (scope.tenant, scope.run_id, scope.tool, scope.name) == (
        "acme",
        run.id,
        "fetch_balance",
        "bank",
    )
    result = next(e.body for e in entries if e.kind.value == "tool.result")
    assert result.output["echo"] == f"token={REDACTED}", "the tool's echo was redacted"
    if store_kind == "sqlite":
        assert result.output["sandbox_exit"] == 0
        sandbox_env = json.loads(result.output["sandbox_env"])
        assert "AUTONOMIC_SECRET_BANK" not in sandbox_env
        path = Path(url.removeprefix("sqlite:///"))
        stored = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    else:
        stored = _pg_dump(url)
    assert b"fetch_balance" in stored, "the dump holds the run"
    assert CANARY.encode() not in stored
    assert messages_seen
    assert not any(CANARY in m for m in messages_seen)
    assert any("using ScopedCredential" in r.getMessage() for r in caplog.records)
    assert not any(CANARY in r.getMessage() for r in caplog.records)
    assert CANARY not in caplog.text


def test_a_tool_whose_credential_cannot_be_issued_fails_its_call_clearly(sqlite_url, monkeypatch):
    monkeypatch.delenv("AUTONOMIC_SECRET_BANK", raising=False)
    messages_seen: list[str] = []
    seen.clear()

    async def go():
        store = build_store(sqlite_url)
        await store.migrate()
        run = await _engine(store, messages_seen).run("bookkeeper", "read A-1", tenant="acme")
        entries = await store.load_journal(run.id)
        await store.close()
        return entries

    entries = asyncio.run(go())
    result = next(e.body for e in entries if e.kind.value == "tool.result")
    assert not result.ok
    assert result.error["code"] == "credentials_unavailable"
    assert (
        "AUTONOMIC_SECRET_ACME__BANK" in result.error["message"]
        or "bank" in result.error["message"]
    )
