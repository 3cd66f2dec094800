"""The demo's tools, called directly: the idempotency contract the engine relies on."""

import asyncio
import subprocess
import sys
import textwrap

import pytest

from autonomic.errors import InvalidInput
from autonomic.examples.reconciliation.bank import bank_problem, create_bank
from autonomic.examples.reconciliation.tools import post_adjustment, sql_query
from autonomic.testing.fleet import bank_reports
from autonomic.tools.contract import ToolContext


def _ctx(bank, key="run_x:7"):
    return ToolContext(
        run_id="run_x", call_id="c1", idempotency_key=key, metadata={"bank": str(bank)}
    )


def _post(bank, key="run_x:7", amount=500, reference="R1"):
    args = {"account": "ACC-1", "reference": reference, "amount_cents": amount, "reason": "fix"}
    return asyncio.run(post_adjustment.invoke(args, _ctx(bank, key)))


def test_a_repeated_key_with_the_same_arguments_posts_once(tmp_path):
    bank = create_bank(tmp_path / "bank.db")
    assert _post(bank)["newly_posted"] is True
    assert _post(bank)["newly_posted"] is False


def test_a_repeated_key_with_other_arguments_is_refused_not_swallowed(tmp_path):
    bank = create_bank(tmp_path / "bank.db")
    _post(bank)
    with pytest.raises(InvalidInput, match="was used for another adjustment"):
        _post(bank, amount=999)
    assert _post(bank, key="run_x:8", amount=999, reference="R2")["newly_posted"] is True


def test_the_demo_workflow_and_policy_are_sound():
    from autonomic.examples.reconciliation.agent import reconciliation_agent

    agent = reconciliation_agent()
    assert agent.workflow is not None
    assert agent.workflow.problems({t.name for t in agent.tools}) == []
    by_name = {t.name: t for t in agent.tools}
    assert by_name["cleanup"].reversible is False, "from policy.yaml, not from code"
    assert by_name["post_adjustment"].retry.attempts == 3
    assert by_name["sql_query"].output_schema is not None


def _killed_inside_a_write(bank):
    """A process SIGKILLed in the middle of a write transaction on ``bank``: it leaves a hot
    rollback journal behind, as a worker the fleet harness kills inside ``file_report`` does."""
    code = textwrap.dedent(
        f"""
        import os, signal, sqlite3
        db = sqlite3.connect({str(bank)!r}, isolation_level=None)
        db.execute("PRAGMA cache_size=1")
        db.execute("BEGIN IMMEDIATE")
        for i in range(2000):
            db.execute("INSERT INTO reports (run_id, title, body) VALUES (?, 't', ?)", (str(i), "x" * 500))
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    subprocess.run([sys.executable, "-c", code], check=False)
    assert bank.with_name(bank.name + "-journal").exists(), "no hot journal was left"


def test_a_bank_left_mid_write_by_a_killed_process_is_still_read(tmp_path):
    # Regression: readers opened the bank with mode=ro, which cannot roll a hot journal back:
    # the run's input check called the bank "not a SQLite database", the read tool failed and
    # the fleet harness crashed with "attempt to write a readonly database".
    bank = create_bank(tmp_path / "bank.db")
    _killed_inside_a_write(bank)
    assert bank_problem(bank) is None
    assert bank_reports(bank) == []
    rows = asyncio.run(sql_query.invoke({"query": "SELECT count(*) AS n FROM reports"}, _ctx(bank)))
    assert rows["rows"] == [[0]]
