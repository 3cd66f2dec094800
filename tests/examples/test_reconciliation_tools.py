"""The demo's tools, called directly: the idempotency contract the engine relies on."""

import asyncio

import pytest

from autonomic.errors import InvalidInput
from autonomic.examples.reconciliation.bank import create_bank
from autonomic.examples.reconciliation.tools import post_adjustment
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
