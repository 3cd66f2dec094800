"""Record and replay: the demos' recorded runs replay clean, and a replay can fail.

The corpus in ``cases/`` was recorded from the demos (``cases/record.py``). A one-line change to
the reconciliation policy (the threshold of its ``large-adjustment`` rule) must make the replay
fail at the decision on the large adjustment, with both paths side by side.
"""

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from autonomic.adapters.model.scripted import FunctionModel
from autonomic.bootstrap import build_store
from autonomic.core.case import MASK, Case, mask
from autonomic.core.messages import ModelResponse, ToolCall
from autonomic.core.run import RunStatus
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.executor import Engine
from autonomic.errors import InvalidInput
from autonomic.examples.reconciliation.agent import POLICY, reconciliation_agent
from autonomic.governance.policy.risk import parse_policy_text
from autonomic.testing.replay import assert_replays, path_of, replay_sync
from autonomic.tools.contract import tool

CASES = Path(__file__).parent / "cases"
CORPUS = sorted(CASES.glob("*.json"))
RECONCILIATION = CASES / "demo-reconciliation.json"
CLI = [sys.executable, "-m", "autonomic.cli"]


def test_the_corpus_holds_a_run_of_every_demo_agent():
    agents = {Case.load(p).run["agent"] for p in CORPUS}
    assert agents == {"reconciliation", "runaway-cleanup", "triage"}


@pytest.mark.parametrize("case", CORPUS, ids=lambda p: p.stem)
def test_every_recorded_demo_run_replays_clean(case):
    report = assert_replays(case)
    assert report.ok
    assert len(report.replayed) == len(report.recorded) > 5


def _with_threshold(agent: Agent, old: str, new: str) -> Agent:
    """``agent`` with one line of its policy file changed."""
    text = POLICY.read_text(encoding="utf-8")
    assert old in text
    policy = parse_policy_text(text.replace(old, new), str(POLICY))
    return dataclasses.replace(agent, gates=(policy.risk.gate(),), version=None)


def test_a_one_line_policy_change_fails_the_replay_at_the_decision_with_a_readable_diff():
    changed = _with_threshold(
        reconciliation_agent(),
        "when: abs(args.amount_cents) > 10000",
        "when: abs(args.amount_cents) > 50000",
    )
    recorded = path_of([e.body for e in Case.load(RECONCILIATION).entries])
    expected = next(
        i for i, s in enumerate(recorded) if s.text.startswith("decision post_adjustment: needs")
    )
    with pytest.raises(AssertionError) as failed:
        assert_replays(RECONCILIATION, changed)
    text = str(failed.value)
    assert f"DIVERGED at step {expected + 1} of {len(recorded)}" in text
    row = next(line for line in text.splitlines() if line.startswith(">"))
    assert f"> {expected + 1:>4}  decision post_adjustment: needs_approval (risk)" in row
    assert row.rstrip().endswith("decision post_adjustment: allow (risk)")
    assert "call post_adjustment@1" in text  # the steps before it, for context


def test_the_replay_fails_where_the_code_takes_another_path_not_later():
    agent = reconciliation_agent()
    blocked = dataclasses.replace(agent, read_only=frozenset(), version=None)
    report = replay_sync(Case.load(RECONCILIATION), blocked)
    assert report.ok  # read_only changes nothing on this path: the replay says so

    tighter = _with_threshold(agent, "risk: medium", "risk: high")  # MEDIUM -> blocked
    report = replay_sync(Case.load(RECONCILIATION), tighter)
    assert report.divergence is not None
    at = report.divergence.index
    assert report.recorded[at].key == ("decision", "post_adjustment", "needs_approval")
    assert report.replayed[at].key == ("decision", "post_adjustment", "blocked")
    assert report.recorded[:at] == report.replayed[:at]


# -- recording a run of one's own agent, on each store ---------------------------------------------


@tool
def pay(to: str, cents: int) -> dict:
    """Pay someone."""
    return {"paid": cents, "to": to}


def _payer() -> Agent:
    return Agent(name="payer", instructions="Pay what the task says.", tools=(pay,), version="1")


def _brain(messages, tools):
    if any(m.role == "tool" for m in messages):
        return ModelResponse(content="paid")
    return ModelResponse(None, (ToolCall("c1", "pay", json.dumps({"to": "ann", "cents": 5})),))


async def _never(**_):
    raise AssertionError("a replay ran a tool")


def test_a_replay_runs_no_tool_and_writes_nothing_to_the_recorded_store(store_url):
    async def record():
        store = build_store(store_url)
        await store.migrate()
        try:
            engine = Engine(
                store,
                AgentRegistry([_payer()]),
                lambda _: FunctionModel(_brain, name="function:payer"),
            )
            run = await engine.run(
                "payer", "pay ann 5 cents", metadata={"api_key": "sk-abc12345678"}
            )
            assert run.status is RunStatus.COMPLETED
            return Case.of(run, await store.load_journal(run.id)), run.id
        finally:
            await store.close()

    async def after(run_id):
        store = build_store(store_url)
        try:
            return (await store.get_run(run_id)).version, len(await store.load_journal(run_id))
        finally:
            await store.close()

    case, run_id = asyncio.run(record())
    before = asyncio.run(after(run_id))
    quiet = dataclasses.replace(_payer(), tools=(dataclasses.replace(pay, fn=_never),))
    report = replay_sync(case, quiet)
    assert report.ok, report.render()
    assert asyncio.run(after(run_id)) == before
    assert case.run["metadata"]["api_key"] == MASK
    exported = _cli("--db", store_url, "export", run_id, cwd=Path.cwd())
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout == case.to_json()
    assert asyncio.run(after(run_id)) == before

    # other arguments: the model's answer now asks for 7 cents where the recorded call paid 5
    changed = Case(
        case.run,
        tuple(
            dataclasses.replace(
                e,
                body=e.body._replace(
                    tool_calls=(ToolCall("c1", "pay", json.dumps({"to": "ann", "cents": 7})),)
                ),
            )
            if e.kind.value == "model.response" and e.body.tool_calls
            else e
            for e in case.entries
        ),
    )
    report = replay_sync(changed, _payer())
    assert report.divergence is not None
    at = report.divergence.index
    assert at == next(i for i, step in enumerate(report.recorded) if step.key[0] == "call")
    assert report.recorded[at].text == 'call pay@1 {"cents":5,"to":"ann"}'
    assert report.replayed[at].text == 'call pay@1 {"cents":7,"to":"ann"}'


# -- the case file ---------------------------------------------------------------------------------


def test_secrets_are_masked_and_everything_else_kept():
    data = {
        "password": "hunter2",
        "access_token": "t",
        "usage": {"input_tokens": 12},
        "url": "postgresql://app:s3cret@db:5432/x",
        "note": "key sk-abcdefghijklmnop and Bearer abcdefghijkl",
        "rows": [{"secretary": "kept"}],
    }
    masked = mask(data)
    assert masked["password"] == MASK
    assert masked["access_token"] == MASK
    assert masked["usage"] == {"input_tokens": 12}
    assert masked["url"] == f"postgresql://app:{MASK}@db:5432/x"
    assert "abcdefghijklmnop" not in masked["note"]
    assert "abcdefghijkl" not in masked["note"].replace("sk-***", "")
    assert masked["rows"] == [{"secretary": "kept"}]


def test_a_case_file_round_trips_byte_for_byte():
    text = RECONCILIATION.read_text(encoding="utf-8")
    assert Case.from_dict(json.loads(text)).to_json() == text


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("not json", "is not JSON (line 1"),
        ('{"format": "other"}', '"format" is not "autonomic.case"'),
        ('{"format": "autonomic.case", "version": 9}', "version 9 is not 1"),
        (
            '{"format": "autonomic.case", "version": 1, "run": {"id": "r", "agent": "a", '
            '"model": "m"}, "journal": [{"seq": 1, "kind": "nonsense", "payload": {}}]}',
            "journal entry 1 is malformed",
        ),
    ],
)
def test_a_malformed_case_file_is_refused_with_one_line(tmp_path, content, expected):
    path = tmp_path / "case.json"
    path.write_text(content)
    with pytest.raises(InvalidInput, match="case file") as refused:
        Case.load(path)
    assert expected in str(refused.value)
    assert "\n" not in str(refused.value)


def test_replaying_a_run_with_another_agent_is_refused():
    with pytest.raises(InvalidInput, match="is a run of agent 'reconciliation', not 'payer'"):
        replay_sync(Case.load(RECONCILIATION), _payer())


# -- the command line ------------------------------------------------------------------------------


def _cli(*args, cwd, env=None):
    full = {k: v for k, v in os.environ.items() if k != "AUTONOMIC_DB"} | (env or {})
    full["COLUMNS"] = "200"
    return subprocess.run(
        [*CLI, *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=300
    )


def test_the_cli_exits_1_with_both_paths_at_a_divergence_and_0_when_clean(tmp_path):
    module = tmp_path / "changed_agent.py"
    module.write_text(
        "import dataclasses\n"
        "from autonomic.examples.reconciliation.agent import POLICY, reconciliation_agent\n"
        "from autonomic.governance.policy.risk import parse_policy_text\n"
        "text = POLICY.read_text().replace('> 10000', '> 50000')\n"
        "gate = parse_policy_text(text, str(POLICY)).risk.gate()\n"
        "agent = dataclasses.replace(reconciliation_agent(), gates=(gate,), version=None)\n"
    )
    env = {"PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    clean = _cli("replay", str(RECONCILIATION), cwd=tmp_path)
    assert clean.returncode == 0, clean.stderr
    assert "no divergence" in clean.stdout
    failed = _cli(
        "replay", str(RECONCILIATION), "--agent", "changed_agent:agent", cwd=tmp_path, env=env
    )
    assert failed.returncode == 1, failed.stderr
    assert "DIVERGED at step" in failed.stdout
    assert "recorded" in failed.stdout
    assert "decision post_adjustment: allow (risk)" in failed.stdout
    missing = _cli("replay", str(tmp_path / "nope.json"), cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: cannot read case file")
    assert "Traceback" not in missing.stderr
    bad_agent = _cli("replay", str(RECONCILIATION), "--agent", "no_such_module:x", cwd=tmp_path)
    assert bad_agent.returncode == 2
    assert bad_agent.stderr.startswith("error: cannot import 'no_such_module'")


def test_exporting_an_unknown_run_says_so_in_one_line(tmp_path):
    db = f"sqlite:///{tmp_path}/x.db"
    assert _cli("--db", db, "migrate", cwd=tmp_path).returncode == 0
    unknown = _cli("--db", db, "export", "run_" + "0" * 32, cwd=tmp_path)
    assert unknown.returncode == 2
    assert unknown.stderr.startswith("error: no run run_" + "0" * 32)
