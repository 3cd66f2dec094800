"""The reconciliation agent and its deterministic "brain".

The brain is a ``FunctionModel``: it reads the conversation, tool results included, and decides the
next action the way an LLM following the instructions would - but deterministically, so the demo
runs offline and a resumed run makes the same decisions. Point the agent at a real model with
``--model openai:MODEL`` and the same tools and instructions apply.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from autonomic.adapters.model.scripted import FunctionModel
from autonomic.core.canonical import canonical_json
from autonomic.core.messages import Message, ModelResponse, Role, ToolCall, ToolSpec
from autonomic.core.run import Run
from autonomic.engine.agent import Agent
from autonomic.errors import RunInputError
from autonomic.examples.reconciliation.bank import bank_problem
from autonomic.examples.reconciliation.tools import (
    cleanup,
    compute_differences,
    file_report,
    post_adjustment,
    sql_query,
)
from autonomic.governance.policy.risk import parse_policy_text
from autonomic.governance.policy.tool_policy import apply_tool_policy
from autonomic.governance.policy.workflow import Workflow
from autonomic.ports.model import Model
from autonomic.toolbox.python_exec import python_exec_tool

INSTRUCTIONS = """You reconcile a bank account overnight.
1. Read the ledger and the bank statement for the account and date with sql_query.
2. Compute the differences: run the computation as Python with python_exec (the ledger and the
   statement as JSON files next to main.py); if the sandbox is unavailable, call
   compute_differences with both sets of lines instead.
3. For every line missing from the ledger and every amount mismatch, call post_adjustment once.
   Lines missing from the statement are timing differences: report them, do not adjust them.
4. Clean up the imported statement with cleanup (the policy may refuse it: then leave it for review).
5. File the report with file_report, then answer with the report text."""


DIFF_CODE = """\
import json

ledger = json.load(open("ledger.json"))
statement = json.load(open("statement.json"))
book = {str(r["reference"]): int(r["amount_cents"]) for r in ledger}
bank = {str(r["reference"]): int(r["amount_cents"]) for r in statement}
print(json.dumps({
    "ledger_total_cents": sum(book.values()),
    "statement_total_cents": sum(bank.values()),
    "missing_in_ledger": [
        {"reference": ref, "amount_cents": bank[ref]} for ref in sorted(bank) if ref not in book
    ],
    "missing_in_statement": [
        {"reference": ref, "amount_cents": book[ref]} for ref in sorted(book) if ref not in bank
    ],
    "amount_mismatches": [
        {
            "reference": ref,
            "ledger_cents": book[ref],
            "statement_cents": bank[ref],
            "difference_cents": bank[ref] - book[ref],
        }
        for ref in sorted(book)
        if ref in bank and book[ref] != bank[ref]
    ],
}))
"""
"""The differences computation the brain runs in the sandbox: the same rules as the in-process
``compute_differences`` tool (a test pins that both give the same answer)."""


def sandbox_ready(environ: Mapping[str, str] | None = None) -> tuple[bool, str]:
    """Whether the sandbox backend ``AUTONOMIC_SANDBOX`` names (default ``namespace``) can run
    code on this host, and why not. The demo asks before it starts a run and records the answer in
    the task (``compute``), so a worker resuming the run decides the same way."""
    from autonomic.adapters.sandbox import BACKENDS

    env = os.environ if environ is None else environ
    name = env.get("AUTONOMIC_SANDBOX", "namespace").strip() or "namespace"
    backend = BACKENDS.get(name)
    if backend is None:
        return False, f"unknown sandbox backend {name!r} (AUTONOMIC_SANDBOX)"
    return backend.doctor()


def _diff_from_sandbox(result: Any) -> dict[str, Any] | None:
    """The differences the sandboxed code printed, or ``None`` if it did not run cleanly. Its
    stdout is untrusted text: parsed as JSON and checked for the expected shape, never run."""
    if not isinstance(result, dict) or not result.get("ok"):
        return None
    try:
        diff = json.loads(str(result.get("stdout") or ""))
    except json.JSONDecodeError:
        return None
    keys = {"ledger_total_cents", "statement_total_cents", "missing_in_ledger"}
    if not isinstance(diff, dict) or not keys <= diff.keys():
        return None
    return diff


def _history(messages: Sequence[Message]) -> list[tuple[str, dict[str, Any], Any]]:
    """(tool name, arguments, parsed result) for every answered tool call, in order."""
    calls: dict[str, ToolCall] = {}
    out: list[tuple[str, dict[str, Any], Any]] = []
    for m in messages:
        if m.role is Role.ASSISTANT:
            calls.update({c.id: c for c in m.tool_calls})
        elif m.role is Role.TOOL and m.tool_call_id in calls:
            call = calls[m.tool_call_id]
            try:
                result = json.loads(m.content or "null")
            except json.JSONDecodeError:
                result = m.content
            out.append((call.name, json.loads(call.arguments or "{}"), result))
    return out


def _task(messages: Sequence[Message]) -> dict[str, Any]:
    for m in messages:
        if m.role is Role.USER:
            try:
                value = json.loads(m.content or "{}")
            except json.JSONDecodeError:
                break
            if isinstance(value, dict):
                return value
    return {"account": "1010-operating", "date": "2026-11-20"}


def _rows(result: Any) -> list[dict[str, Any]]:
    if not isinstance(result, dict):
        return []
    return [dict(zip(result["columns"], row, strict=True)) for row in result["rows"]]


def _call(turn: int, name: str, **arguments: Any) -> ModelResponse:
    call = ToolCall(id=f"call_{turn}_1", name=name, arguments=canonical_json(arguments))
    return ModelResponse(content=None, tool_calls=(call,), model="function:reconciliation")


def reconciliation_policy(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> ModelResponse:
    """Decide the next step of a reconciliation from the conversation so far."""
    task = _task(messages)
    account, date = task.get("account", "1010-operating"), task.get("date", "2026-11-20")
    history = _history(messages)
    turn = sum(1 for m in messages if m.role is Role.ASSISTANT) + 1
    done = [name for name, _, _ in history]
    select = "SELECT reference, description, amount_cents FROM {} WHERE account = '{}' AND date = '{}' ORDER BY reference"
    if "sql_query" not in done:
        return _call(turn, "sql_query", query=select.format("ledger", account, date))
    if done.count("sql_query") == 1:
        return _call(turn, "sql_query", query=select.format("statement", account, date))
    ledger, statement = (_rows(r) for n, _, r in history if n == "sql_query")
    sandboxed = [r for n, _, r in history if n == "python_exec"]
    diff = _diff_from_sandbox(sandboxed[0]) if sandboxed else None
    if diff is None and "compute_differences" in done:
        diff = next(r for n, _, r in history if n == "compute_differences")
    if diff is None:
        offered = {t.name for t in tools}
        if task.get("compute") == "sandbox" and not sandboxed and "python_exec" in offered:
            files = {"ledger.json": json.dumps(ledger), "statement.json": json.dumps(statement)}
            return _call(turn, "python_exec", code=DIFF_CODE, files=files)
        return _call(turn, "compute_differences", ledger=ledger, statement=statement)
    adjustments = [
        (line["reference"], line["amount_cents"], "missing from ledger")
        for line in diff["missing_in_ledger"]
    ] + [
        (line["reference"], line["difference_cents"], "amount differs from statement")
        for line in diff["amount_mismatches"]
    ]
    tried = [args["reference"] for name, args, _ in history if name == "post_adjustment"]
    for reference, amount, reason in adjustments:
        if reference not in tried:
            return _call(
                turn,
                "post_adjustment",
                account=account,
                reference=reference,
                amount_cents=amount,
                reason=reason,
            )
    if "cleanup" not in done:
        return _call(turn, "cleanup", table="statement")
    refused = {
        args["reference"]: str(result)
        for name, args, result in history
        if name == "post_adjustment" and not isinstance(result, dict)
    }
    cleaned = next(r for n, _, r in history if n == "cleanup")
    report = _report(account, date, diff, adjustments, refused, cleaned)
    if "file_report" not in done:
        return _call(turn, "file_report", title=f"Reconciliation {account} {date}", body=report)
    return ModelResponse(content=report, model="function:reconciliation")


def _money(cents: int) -> str:
    return f"{cents / 100:,.2f}"


def _report(
    account: str,
    date: str,
    diff: dict[str, Any],
    proposed: list[tuple[str, int, str]],
    refused: dict[str, str],
    cleaned: Any,
) -> str:
    adjustments = [a for a in proposed if a[0] not in refused]
    lines = [
        f"Reconciliation report - account {account}, {date}",
        f"Ledger total {_money(diff['ledger_total_cents'])}, "
        f"statement total {_money(diff['statement_total_cents'])}.",
        f"Adjusting entries posted ({len(adjustments)}):",
    ]
    lines += [f"  - {ref}: {_money(amount)} ({reason})" for ref, amount, reason in adjustments]
    if refused:
        lines.append(f"Adjusting entries refused ({len(refused)}), left for a controller:")
        lines += [f"  - {ref}: {why}" for ref, why in sorted(refused.items())]
    timing = diff["missing_in_statement"]
    lines.append(f"Timing differences, not adjusted ({len(timing)}):")
    lines += [f"  - {t['reference']}: {_money(t['amount_cents'])}" for t in timing]
    adjusted = diff["ledger_total_cents"] + sum(a for _, a, _ in adjustments)
    outstanding = sum(t["amount_cents"] for t in timing)
    balanced = adjusted - outstanding == diff["statement_total_cents"]
    if not isinstance(cleaned, dict):
        lines.append(f"Statement cleanup not done: {cleaned}")
    lines.append(
        f"Adjusted ledger {_money(adjusted)} less outstanding {_money(outstanding)} "
        f"{'equals' if balanced else 'DOES NOT equal'} the statement: "
        f"{'reconciled' if balanced else 'NOT reconciled'}."
    )
    return "\n".join(lines)


POLICY = resources.files(__package__).joinpath("policy.yaml")
"""The agent's governance policy: risk rules and tool operational metadata (no code)."""
WORKFLOW = resources.files(__package__).joinpath("workflow.yaml")
"""The state machine the agent's calls follow."""


def check_run(run: Run) -> None:
    """The run's inputs, checked before every drive (``Agent.check``): ``metadata.bank`` must be
    the path of a bank database. Missing or wrong, the run is suspended with one line saying what
    to give and how - never a ``TypeError`` steps later when the tools' errors reach the brain.

    The pattern for any agent that reads metadata or a structured task: check it here, raise
    ``RunInputError`` with the fix in the hint."""
    give = (
        f'give it: autonomic resume {run.id} --force --metadata \'{{"bank": "PATH"}}\''
        " (`autonomic demo` creates a bank)"
    )
    bank = run.metadata.get("bank")
    if bank is None:
        raise RunInputError("this run has no bank database: metadata.bank is not set", hint=give)
    if not isinstance(bank, str) or not bank.strip():
        raise RunInputError(
            f"metadata.bank must be the path of the bank database, got {bank!r}", hint=give
        )
    problem = bank_problem(Path(bank))
    if problem is not None:
        raise RunInputError(f"metadata.bank {bank}: {problem}", hint=give)


def reconciliation_agent() -> Agent:
    """The demo agent, on its deterministic model, governed by ``policy.yaml`` and
    ``workflow.yaml``."""
    policy = parse_policy_text(POLICY.read_text(encoding="utf-8"), str(POLICY))
    tools = (
        sql_query,
        python_exec_tool(),
        compute_differences,
        post_adjustment,
        cleanup,
        file_report,
    )
    return Agent(
        name="reconciliation",
        instructions=INSTRUCTIONS,
        tools=tuple(
            apply_tool_policy(tools, policy.tools, path=policy.path, lines=policy.tool_lines)
        ),
        model="function:reconciliation",
        max_turns=20,
        gates=(policy.risk.gate(),),
        workflow=Workflow.from_text(WORKFLOW.read_text(encoding="utf-8"), str(WORKFLOW)),
        check=check_run,
    )


FUNCTION_MODELS: dict[str, Callable[[], Model]] = {
    "reconciliation": lambda: FunctionModel(reconciliation_policy, name="function:reconciliation"),
}
"""The deterministic models this example brings (``function:NAME``); the composition root
registers them when it loads the example."""
