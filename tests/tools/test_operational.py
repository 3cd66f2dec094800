"""Operational metadata of tool contracts, enforced by the engine; policy overrides without code;
version pinning; contract tests against recordings."""

import asyncio
import json

import pytest

from autonomic.adapters.model.scripted import ScriptedModel
from autonomic.bootstrap import build_store
from autonomic.core.journal import EntryKind
from autonomic.core.run import RunStatus
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.executor import Engine
from autonomic.errors import InvalidInput, PolicyFileError
from autonomic.governance.policy.risk import parse_policy_text
from autonomic.governance.policy.tool_policy import apply_tool_policy
from autonomic.testing.contracts import assert_contract, check_recordings, record
from autonomic.tools.contract import Tool, ToolContext, tool
from autonomic.tools.operational import DataClass, RetryPolicy

CALLS: dict[str, int] = {}


@tool(idempotent=True, retry=RetryPolicy(attempts=3, backoff=0.0))
def flaky(n: int, ctx: ToolContext) -> int:
    """Fails twice per idempotency key, then works."""
    CALLS[ctx.idempotency_key] = CALLS.get(ctx.idempotency_key, 0) + 1
    if CALLS[ctx.idempotency_key] < 3:
        raise ConnectionError("upstream hiccup")
    return n


@tool(idempotent=True, timeout=0.05)
async def slow(n: int) -> int:
    """Never answers in time."""
    await asyncio.Event().wait()
    return n


@tool(idempotent=True, output_schema={"type": "object", "required": ["rate"]})
def fx(pair: str) -> dict[str, object]:
    """Returns the wrong shape."""
    return {"price": 1.08}


def _drive(url, tools, turns):
    async def go():
        store = build_store(url)
        await store.migrate()
        agent = Agent(name="ops", instructions="x", tools=tools)
        model = ScriptedModel(turns)
        engine = Engine(store, AgentRegistry([agent]), lambda spec: model)
        run = await engine.run("ops", "go")
        entries = await store.load_journal(run.id)
        await store.close()
        return run, [e.payload for e in entries if e.kind is EntryKind.TOOL_RESULT]

    return asyncio.run(go())


def test_the_engine_retries_an_idempotent_tool_per_its_policy(sqlite_url):
    run, results = _drive(
        sqlite_url,
        (flaky,),
        [{"tool_calls": [{"name": "flaky", "arguments": {"n": 7}}]}, {"content": "ok"}],
    )
    assert run.status is RunStatus.COMPLETED
    assert results[0]["ok"]
    assert results[0]["output"] == 7
    assert results[0]["attempts"] == 3


def test_timeout_and_output_schema_are_enforced(sqlite_url):
    _run, results = _drive(
        sqlite_url,
        (slow, fx),
        [
            {"tool_calls": [{"name": "slow", "arguments": {"n": 1}}]},
            {"tool_calls": [{"name": "fx", "arguments": {"pair": "EURUSD"}}]},
            {"content": "ok"},
        ],
    )
    assert [r["error"]["code"] for r in results] == ["tool_timeout", "tool_output_invalid"]
    assert "'rate' is a required property" in results[1]["error"]["message"]


def test_retry_needs_an_idempotent_tool():
    with pytest.raises(InvalidInput, match="only idempotent tools are retried"):

        @tool(retry=RetryPolicy(attempts=2))
        def send(text: str) -> str:
            """x"""
            return text


def test_a_policy_file_changes_operational_metadata_without_code():
    policy = parse_policy_text(
        "tools:\n  fx:\n    timeout: 2\n    data_class: financial\n    reversible: false\n"
        "    retry: {attempts: 4}\n"
    )
    [changed] = apply_tool_policy([fx], policy.tools, path=policy.path, lines=policy.tool_lines)
    assert changed.fn is fx.fn
    assert (changed.timeout, changed.data_class, changed.reversible) == (
        2.0,
        DataClass.FINANCIAL,
        False,
    )
    assert changed.retry.attempts == 4
    assert changed.metadata()["data_class"] == "financial"


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("tools:\n  fx:\n    timeout: soon\n", 3, "timeout must be a number"),
        ("tools:\n  fx:\n    data_class: secret\n", 3, "bad data_class"),
        ("tools:\n  fx:\n    retry: {tries: 2}\n", 3, "unknown key 'tries' in retry"),
        ("tools:\n  nope:\n    timeout: 1\n", 2, "policy for unknown tool 'nope'"),
    ],
)
def test_bad_tool_policy_names_file_and_line(text, line, fragment):
    def load():
        policy = parse_policy_text(text, "ops.yaml")
        apply_tool_policy([fx], policy.tools, path=policy.path, lines=policy.tool_lines)

    with pytest.raises(PolicyFileError) as caught:
        load()
    assert caught.value.line == line
    assert fragment in str(caught.value)
    assert str(caught.value).startswith(f"ops.yaml:{line}: ")


def test_a_run_never_executes_against_a_version_it_did_not_pin(sqlite_url):
    v1 = Tool(name="rate", fn=lambda: 1, parameters={"type": "object"}, version="1")
    v2 = Tool(name="rate", fn=lambda: 2, parameters={"type": "object"}, version="2")
    turns = [{"tool_calls": [{"name": "rate", "arguments": {}}]}, {"content": "ok"}]

    async def go():
        store = build_store(sqlite_url)
        await store.migrate()
        model = ScriptedModel(turns)
        old = Engine(
            store,
            AgentRegistry([Agent(name="a", instructions="x", tools=(v1,), version="1")]),
            lambda s: model,
        )
        run = await old.start("a", "go")
        new = Engine(
            store,
            # The agent's version named, unchanged: only the tool's changed (with a computed
            # version the agent's version would differ too, and the run would not be claimed).
            AgentRegistry([Agent(name="a", instructions="x", tools=(v2,), version="1")]),
            lambda s: model,
        )
        final = await new.run_to_end(run.id)
        entries = await store.load_journal(run.id)
        await store.close()
        return final, entries

    final, entries = asyncio.run(go())
    assert final.status is RunStatus.SUSPENDED
    assert "pinned rate@1" in final.status_reason
    assert "registered: rate@2" in final.status_reason
    assert not [e for e in entries if e.kind is EntryKind.TOOL_INTENT]


def test_contract_tests_check_schemas_against_recordings(tmp_path):
    path = tmp_path / "fx.jsonl"
    good = fx.with_policy(output_schema={"type": "object", "required": ["price"]})
    record(path, good, {"pair": "EURUSD"}, {"price": 1.08})
    assert check_recordings(good, path) == []
    assert_contract(good, path)
    problems = check_recordings(fx, path)
    assert [p.message for p in problems] == [
        "output of fx@1 breaks its output_schema at (top level): 'rate' is a required property"
    ]
    path.write_text(path.read_text() + json.dumps({"arguments": {"pair": 5}, "output": {}}) + "\n")
    with pytest.raises(AssertionError, match="recording 2"):
        assert_contract(good, path)


def test_tools_declared_in_yaml_around_a_function(tmp_path):
    path = tmp_path / "tools.yaml"
    path.write_text(
        "tools:\n"
        "  diff:\n"
        "    function: autonomic.examples.reconciliation.tools:compute_differences\n"
        "    version: '2'\n"
        "    data_class: financial\n"
        "  base:\n"
        "    function: posixpath:basename\n"
        "    idempotent: true\n"
        "    description: The last part of a path.\n"
        "  broken:\n"
        "    function: nowhere.at.all:fn\n"
    )
    from autonomic.governance.policy.tool_policy import load_tool_policy

    overrides, lines = load_tool_policy(str(path))
    broken = overrides.pop("broken")
    diff, base = apply_tool_policy([], overrides, path=str(path), lines=lines)
    assert (diff.ref, diff.data_class) == ("diff@2", DataClass.FINANCIAL)
    assert diff.fn is not None
    assert (base.name, base.idempotent, base.description) == (
        "base",
        True,
        "The last part of a path.",
    )
    with pytest.raises(PolicyFileError, match=r"tools.yaml:10: tool broken: cannot import"):
        apply_tool_policy([], {"broken": broken}, path=str(path), lines=lines)
