"""The seed's code-audit swarm, offline: a coordinator, a code analyzer, a security auditor (run by
two worker processes), and the two runaway shapes the delegation guards exist for.

**The audit.** The ``coordinator`` gets "audit this repository: PATH". It hands the whole
repository to the ``code.analyze`` capability (the ``code-analyzer`` agent lists the files and
what is in them), then every file at once to the ``security.audit`` capability (the
``security-auditor`` agent scans it with ``audit_file``; the audits run in parallel), and answers
with the aggregated findings. Each subtask is a
child run; ``autonomic demo --scenario swarm`` runs the auditor in two ``autonomic worker``
processes and SIGKILLs one of them in the middle of an audit.

**Exactly once.** ``audit_file`` and ``analyze_repo`` record each attempt (which process, which
call) and apply their effect - a row in the repository's effect ledger, ``effects.db`` next to it
- under the call's idempotency key (``INSERT OR IGNORE``): a call re-executed after a crash finds
its effect applied and applies nothing. The ledger is what the demo counts.

**Ping-pong.** ``writer`` hands a lint fix to ``reviewer``, who hands it back, "attempt 2", and so
on: the delegation guards stop it on the third hand-off.

**The runaway chain.** ``level-0`` hands its task to ``level-1``, which hands it to ``level-2``...
up to ``level-47``; the depth guard stops it at the configured depth.

The fixture repository (``REPOSITORY``) is a few small files written out by ``write_repository``.
Every "model" is a deterministic function of the conversation (``function:swarm-*``).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

from autonomic.adapters.model.scripted import FunctionModel
from autonomic.core.canonical import canonical_json
from autonomic.core.messages import Message, ModelResponse, Role, ToolCall, ToolSpec
from autonomic.engine.agent import Agent
from autonomic.errors import InvalidInput
from autonomic.ports.model import Model
from autonomic.tools.capability import Capability
from autonomic.tools.contract import ToolContext, tool

ANALYZE = "code.analyze"
AUDIT = "security.audit"
CHAIN_LEVELS = 47
"""The incident's chain: 47 levels of delegation."""
AUDIT_HOLD = 0.8
"""Seconds an audit takes: long enough for the demo to kill a worker in the middle of one."""

REPOSITORY: dict[str, str] = {
    "app.py": (
        "import hashlib\nimport subprocess\n\n\n"
        "def fingerprint(data: bytes) -> str:\n"
        "    return hashlib.md5(data).hexdigest()\n\n\n"
        "def archive(name: str) -> None:\n"
        '    subprocess.run(f"tar czf {name}.tgz {name}", shell=True)\n'
    ),
    "db.py": (
        "def find_user(cursor, name: str):\n"
        "    cursor.execute(f\"SELECT * FROM users WHERE name = '{name}'\")\n"
        "    return cursor.fetchone()\n"
    ),
    "settings.py": ('DEBUG = False\nAPI_KEY = "sk-live-0000-demo-not-a-secret"\nTIMEOUT = 30\n'),
    "text.py": ('def slugify(text: str) -> str:\n    return "-".join(text.lower().split())\n'),
}
"""The fixture repository the swarm audits (file name to content)."""

RULES: tuple[tuple[str, str, str], ...] = (
    ("weak-hash", r"hashlib\.(md5|sha1)\(", "medium"),
    ("shell-injection", r"shell=True", "high"),
    ("sql-injection", r"execute\(f[\"']", "high"),
    ("hardcoded-secret", r"(?i)(api_key|password|secret)\s*=\s*[\"'][^\"']+[\"']", "high"),
)


def write_repository(directory: Path) -> Path:
    """Write the fixture repository into ``directory/repo`` (created); its path."""
    repo = directory / "repo"
    repo.mkdir(parents=True, exist_ok=True)
    for name, text in REPOSITORY.items():
        (repo / name).write_text(text, encoding="utf-8")
    return repo


# -- the effect ledger ----------------------------------------------------------------------------


def ledger_path(repo: Path) -> Path:
    """Where the effects of the swarm's tools over ``repo`` are recorded."""
    return repo.parent / "effects.db"


def _ledger(repo: Path) -> sqlite3.Connection:
    db = sqlite3.connect(ledger_path(repo), timeout=30, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(
        "CREATE TABLE IF NOT EXISTS attempts (n INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT, "
        "tool TEXT, file TEXT, pid INTEGER)"
    )
    db.execute(
        "CREATE TABLE IF NOT EXISTS effects (key TEXT PRIMARY KEY, tool TEXT, file TEXT, "
        "pid INTEGER)"
    )
    return db


def attempts(repo: Path) -> list[dict[str, Any]]:
    """Every execution of a swarm tool, in order: key, tool, file, pid."""
    if not ledger_path(repo).exists():
        return []
    with closing(_ledger(repo)) as db:
        rows = db.execute("SELECT key, tool, file, pid FROM attempts ORDER BY n").fetchall()
    return [{"key": k, "tool": t, "file": f, "pid": p} for k, t, f, p in rows]


def effects(repo: Path) -> list[dict[str, Any]]:
    """Every applied effect (one per call, whoever executed it): key, tool, file, pid."""
    if not ledger_path(repo).exists():
        return []
    with closing(_ledger(repo)) as db:
        rows = db.execute("SELECT key, tool, file, pid FROM effects ORDER BY key").fetchall()
    return [{"key": k, "tool": t, "file": f, "pid": p} for k, t, f, p in rows]


def _attempt(repo: Path, ctx: ToolContext, name: str, file: str) -> None:
    with closing(_ledger(repo)) as db:
        db.execute(
            "INSERT INTO attempts (key, tool, file, pid) VALUES (?, ?, ?, ?)",
            (ctx.idempotency_key, name, file, os.getpid()),
        )


def _apply(repo: Path, ctx: ToolContext, name: str, file: str) -> None:
    with closing(_ledger(repo)) as db:
        db.execute(
            "INSERT OR IGNORE INTO effects (key, tool, file, pid) VALUES (?, ?, ?, ?)",
            (ctx.idempotency_key, name, file, os.getpid()),
        )


def _repo(path: str) -> Path:
    repo = Path(path)
    if not path or not repo.is_dir():
        raise InvalidInput(f"repository {path!r} is not a directory")
    return repo


def _file(repo: Path, file: str) -> Path:
    target = (repo / file).resolve()
    if target.parent != repo.resolve() or not target.is_file():
        raise InvalidInput(f"{file!r} is not a file of the repository")
    return target


# -- the tools ------------------------------------------------------------------------------------


@tool(idempotent=True)
def analyze_repo(repo: str, ctx: ToolContext) -> dict[str, Any]:
    """List the repository's files with their source and functions."""
    root = _repo(repo)
    _attempt(root, ctx, "analyze_repo", "*")
    files = []
    for path in sorted(root.iterdir()):
        if path.is_file() and path.suffix == ".py":
            source = path.read_text(encoding="utf-8")
            functions = re.findall(r"^def (\w+)", source, re.M)
            files.append({"file": path.name, "source": source, "functions": functions})
    _apply(root, ctx, "analyze_repo", "*")
    return {"files": files}


@tool(idempotent=True)
def audit_file(
    repo: str, file: str, ctx: ToolContext, source: str = "", functions: list[str] | None = None
) -> dict[str, Any]:
    """Scan one file for security problems (weak hashes, shell and SQL injection, secrets): the
    ``source`` the analysis read (the file on disk when none is given)."""
    root = _repo(repo)
    text = source or _file(root, file).read_text(encoding="utf-8")
    _attempt(root, ctx, "audit_file", file)
    time.sleep(AUDIT_HOLD)  # the audit itself: the demo kills a worker in here
    findings = [
        {"rule": rule, "line": n, "severity": severity}
        for n, line in enumerate(text.splitlines(), start=1)
        for rule, pattern, severity in RULES
        if re.search(pattern, line)
    ]
    _apply(root, ctx, "audit_file", file)
    return {"file": file, "findings": findings}


# -- the agents -----------------------------------------------------------------------------------

ANALYZE_CAPABILITY = Capability(
    ANALYZE,
    input_schema={"type": "object", "required": ["repo"]},
    output_schema={"type": "object", "required": ["files"]},
    cost=0.001,
    latency=0.1,
    description="list a repository's files and their functions",
)
AUDIT_CAPABILITY = Capability(
    AUDIT,
    input_schema={"type": "object", "required": ["repo", "file"]},
    output_schema={"type": "object", "required": ["file", "findings"]},
    cost=0.002,
    latency=AUDIT_HOLD,
    description="audit one file for security problems",
)


def coordinator() -> Agent:
    return Agent(
        "coordinator",
        "Audit the repository: have it analyzed, have each file audited, report the findings.",
        model="function:swarm-coordinator",
        delegates_to=[ANALYZE, AUDIT],
        max_turns=20,
    )


def code_analyzer() -> Agent:
    return Agent(
        "code-analyzer",
        "List the repository's files with analyze_repo; answer with its result as JSON.",
        tools=(analyze_repo,),
        model="function:swarm-analyzer",
        capabilities=[ANALYZE_CAPABILITY],
        read_only=frozenset({"analyze_repo"}),
    )


def security_auditor() -> Agent:
    return Agent(
        "security-auditor",
        "Audit the file with audit_file; answer with its result as JSON.",
        tools=(audit_file,),
        model="function:swarm-auditor",
        capabilities=[AUDIT_CAPABILITY],
        read_only=frozenset({"audit_file"}),
    )


def writer() -> Agent:
    return Agent(
        "writer",
        "Write the code; have the reviewer check it.",
        model="function:swarm-writer",
        delegates_to=["reviewer"],
    )


def reviewer() -> Agent:
    return Agent(
        "reviewer",
        "Review the code; hand lint problems back to the writer.",
        model="function:swarm-reviewer",
        delegates_to=["writer"],
    )


def chain() -> list[Agent]:
    """``level-0`` ... ``level-47``: each hands its task to the next one."""
    return [
        Agent(
            f"level-{i}",
            f"Hand the task on. next: level-{i + 1}",
            model="function:swarm-relay",
            delegates_to=[f"level-{i + 1}"],
        )
        for i in range(CHAIN_LEVELS)
    ] + [Agent(f"level-{CHAIN_LEVELS}", "Do the task.", model="function:swarm-relay")]


def auditors() -> list[Agent]:
    """What an auditor worker process drives (``--agent autonomic.examples.swarm.agent:auditors``)."""
    return [security_auditor()]


def agents() -> list[Agent]:
    """Every agent of the swarm (``--agent autonomic.examples.swarm.agent:agents``)."""
    return [coordinator(), code_analyzer(), security_auditor(), writer(), reviewer(), *chain()]


# -- the deterministic "models" -------------------------------------------------------------------


def _task(messages: Sequence[Message]) -> str:
    return next((m.content or "" for m in messages if m.role is Role.USER), "")


def _system(messages: Sequence[Message]) -> str:
    return next((m.content or "" for m in messages if m.role is Role.SYSTEM), "")


def _results(messages: Sequence[Message]) -> list[Any]:
    found: list[Any] = []
    for m in messages:
        if m.role is Role.TOOL and m.content:
            try:
                found.append(json.loads(m.content))
            except ValueError:
                found.append(m.content)
    return found


def _call(name: str, arguments: dict[str, Any], n: int, model: str) -> ModelResponse:
    return ModelResponse(
        content=None,
        tool_calls=(ToolCall(f"call_{n}_{name}", name, canonical_json(arguments)),),
        model=model,
    )


def _delegate(to: str, task: Any, n: int, model: str) -> ModelResponse:
    return _call("delegate", {"to": to, "task": task}, n, model)


def coordinator_policy(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> ModelResponse:
    """Analyze, then audit every analyzed file at once (one turn handing off all the audits:
    they run in parallel, the coordinator waits for them all as a row), then aggregate."""
    model = "function:swarm-coordinator"
    repo = _task(messages).rpartition(":")[2].strip()
    results = _results(messages)
    if not results:
        return _delegate(ANALYZE, {"repo": repo}, 0, model)
    analysis = results[0].get("output") if isinstance(results[0], dict) else None
    if not isinstance(analysis, dict) or not isinstance(analysis.get("files"), list):
        return ModelResponse(f"the analysis failed: {results[0]}", model=model)
    files = [f for f in analysis["files"] if isinstance(f, dict)]
    audits = results[1:]
    if len(audits) < len(files):
        # what the analysis read goes with the file: each subtask carries the code it is about
        calls = []
        for n, file in enumerate(files, start=1):
            subtask = {
                "repo": repo,
                "file": str(file.get("file")),
                "source": file.get("source", ""),
                "functions": file.get("functions", []),
            }
            arguments = canonical_json({"to": AUDIT, "task": subtask})
            calls.append(ToolCall(f"call_{n}_delegate", "delegate", arguments))
        return ModelResponse(content=None, tool_calls=tuple(calls), model=model)
    report: dict[str, Any] = {"files": len(files), "findings": []}
    for audit in audits:
        output = audit.get("output") if isinstance(audit, dict) else None
        if not isinstance(output, dict):
            report["findings"].append({"error": audit})
            continue
        for finding in output.get("findings", []):
            report["findings"].append({"file": output.get("file"), **finding})
    return ModelResponse(canonical_json(report), model=model)


def _tool_then_answer(name: str, model: str) -> Callable[..., ModelResponse]:
    def policy(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> ModelResponse:
        results = _results(messages)
        if results:
            return ModelResponse(canonical_json(results[-1]), model=model)
        try:
            arguments = json.loads(_task(messages))
        except ValueError:
            return ModelResponse("the task is not JSON", model=model)
        return _call(name, arguments, 1, model)

    return policy


LINT = "Fix the lint in text.py"


def writer_policy(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> ModelResponse:
    """Hands the code to the reviewer, and the lint fix back again, whatever it is told."""
    model = "function:swarm-writer"
    results = _results(messages)
    if not results:
        task = _task(messages)
        attempt = 1 + int(m.group(1)) if (m := re.search(r"attempt (\d+)", task)) else 1
        return _delegate("reviewer", f"{LINT} (attempt {attempt})", 0, model)
    return ModelResponse(f"the review came back: {results[-1]}", model=model)


def reviewer_policy(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> ModelResponse:
    """Finds the same lint problem every time and hands it back to the writer."""
    model = "function:swarm-reviewer"
    results = _results(messages)
    if not results:
        task = _task(messages)
        attempt = 1 + int(m.group(1)) if (m := re.search(r"attempt (\d+)", task)) else 2
        return _delegate("writer", f"{LINT} (attempt {attempt})", 0, model)
    return ModelResponse(f"the fix came back: {results[-1]}", model=model)


def relay_policy(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> ModelResponse:
    """Hands the task to the agent its instructions name after ``next:``; the last level does
    it."""
    model = "function:swarm-relay"
    results = _results(messages)
    if results:
        return ModelResponse(canonical_json(results[-1]), model=model)
    target = _system(messages).rpartition("next:")[2].strip()
    if "next:" not in _system(messages):
        return ModelResponse("done", model=model)
    return _delegate(target, _task(messages), 0, model)


FUNCTION_MODELS: dict[str, Callable[[], Model]] = {
    "swarm-coordinator": lambda: FunctionModel(
        coordinator_policy, name="function:swarm-coordinator"
    ),
    "swarm-analyzer": lambda: FunctionModel(
        _tool_then_answer("analyze_repo", "function:swarm-analyzer"),
        name="function:swarm-analyzer",
    ),
    "swarm-auditor": lambda: FunctionModel(
        _tool_then_answer("audit_file", "function:swarm-auditor"), name="function:swarm-auditor"
    ),
    "swarm-writer": lambda: FunctionModel(writer_policy, name="function:swarm-writer"),
    "swarm-reviewer": lambda: FunctionModel(reviewer_policy, name="function:swarm-reviewer"),
    "swarm-relay": lambda: FunctionModel(relay_policy, name="function:swarm-relay"),
}
"""The deterministic models this example brings; the composition root registers them."""
