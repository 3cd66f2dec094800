"""The ``python_exec`` tool: run model-written Python in a sandbox, never on the host.

Each call passes the static-analysis gate first (its findings are part of the result, so the
journal keeps them with the step), then runs in a fresh sandbox of the configured backend
(``AUTONOMIC_SANDBOX``, default ``namespace``). The result is a JSON-able dict the model reads as
its observation; what the code printed is untrusted text and is only ever shown, never executed.

The tool is declared idempotent: the code runs in a fresh, network-less sandbox that keeps
nothing, so running it again after a crash computes the same thing and changes nothing outside.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from autonomic.errors import ToolError
from autonomic.governance.code_gate import CodeGate, CodePolicy, finding_record, refusal
from autonomic.observability import genai
from autonomic.observability.metrics import current_metrics
from autonomic.observability.tracing import current_tracing
from autonomic.ports.sandbox import Execution, Limits, Result, Sandbox, SandboxUnavailable
from autonomic.tools.contract import Tool

NAME = "python_exec"
MAX_CODE_CHARS = 200_000
MAX_FILES = 32
MAX_FILE_CHARS = 2_000_000

PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "code": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_CODE_CHARS,
            "description": "Python 3 source, run as main.py in an empty working directory.",
        },
        "files": {
            "type": "object",
            "maxProperties": MAX_FILES,
            "additionalProperties": {"type": "string", "maxLength": MAX_FILE_CHARS},
            "description": "Text files to place next to main.py: relative path -> content.",
        },
    },
    "required": ["code"],
    "additionalProperties": False,
}
DESCRIPTION = (
    "Run Python 3 code in an isolated sandbox with no network and a fresh, empty working "
    "directory; returns stdout, stderr, the exit code and why it ended. Print what you need."
)


def gate_from_env(environ: Mapping[str, str] | None = None) -> CodeGate:
    """A gate with the ``code_gate:`` section of the policy file ``AUTONOMIC_POLICY`` names (if
    any), then the overrides in ``AUTONOMIC_SANDBOX_GATE`` (see ``CodePolicy.parse``)."""
    env = os.environ if environ is None else environ
    base = None
    if env.get("AUTONOMIC_POLICY"):
        from autonomic.governance.policy.code_policy import load_code_policy

        base = load_code_policy(env["AUTONOMIC_POLICY"])
    return CodeGate(CodePolicy.parse(env.get("AUTONOMIC_SANDBOX_GATE", ""), base))


def result_dict(result: Result, findings: list[dict[str, Any]]) -> dict[str, Any]:
    """What the model and the journal see."""
    return {
        "ok": result.ok,
        "ended": str(result.ended),
        "exit_code": result.exit_code,
        "stdout": result.stdout,
        "stderr": result.stderr,
        "stdout_truncated": result.stdout_truncated,
        "stderr_truncated": result.stderr_truncated,
        "duration_s": round(result.duration_s, 4),
        "usage": asdict(result.usage),
        "backend": result.backend,
        "detail": result.detail,
        "findings": findings,
    }


class PythonExec:
    """The tool's behaviour, holding its sandbox (built on first use) and gate."""

    def __init__(
        self,
        sandbox: Sandbox | None = None,
        *,
        gate: CodeGate | None = None,
        limits: Limits | None = None,
    ) -> None:
        self._sandbox = sandbox
        self._gate = gate
        self.limits = limits or Limits()
        self._lock = asyncio.Lock()

    async def sandbox(self) -> Sandbox:
        async with self._lock:
            if self._sandbox is None:
                self._sandbox = _sandbox_from_env()
            return self._sandbox

    async def __call__(self, code: str, files: dict[str, str] | None = None) -> dict[str, Any]:
        gate = self._gate or gate_from_env()
        decision = await asyncio.to_thread(gate.inspect, code)
        findings = [finding_record(f) for f in decision.findings]
        if not decision.allowed:
            return result_dict(refusal(decision), findings)
        execution = Execution(
            code=code,
            files={path: text.encode("utf-8") for path, text in (files or {}).items()},
            limits=self.limits,
        )
        sandbox = await self.sandbox()
        with SandboxObservation(sandbox.name) as seen:
            try:
                result = await sandbox.execute(execution)
            except SandboxUnavailable as exc:
                raise ToolError(f"the sandbox cannot run code here: {exc}", hint=exc.hint) from exc
            seen.ended(result)
        return result_dict(result, findings)

    async def close(self) -> None:
        if self._sandbox is not None:
            await self._sandbox.close()


class SandboxObservation:
    """A sandbox execution as a span (``sandbox.execute BACKEND``: backend, provisioning time,
    end reason) and as metrics (``sandbox_provisioning`` phase, executions by end, the pool in
    use) - each only when tracing or metrics are on in this process. Provisioning is the wall
    time of ``execute`` less the time the code itself ran (``Result.duration_s``)."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.tracing = current_tracing()
        self.metrics = current_metrics()
        self._span: Any = None
        self._started = 0.0

    def __enter__(self) -> SandboxObservation:
        self._started = time.perf_counter()
        if self.tracing is not None:
            attrs: dict[str, Any] = {genai.SANDBOX_BACKEND: self.backend}
            from opentelemetry import trace as api

            # The correlation id is on every span: take it from the tool call's span around us.
            around = getattr(api.get_current_span(), "attributes", None) or {}
            if genai.CORRELATION_ID in around:
                attrs[genai.CORRELATION_ID] = around[genai.CORRELATION_ID]
            self._span = self.tracing.start(f"sandbox.execute {self.backend}", None, attrs)
        if self.metrics is not None:
            self.metrics.sandboxes_active.labels(self.backend).inc()
        return self

    def ended(self, result: Result) -> None:
        provisioning = max(0.0, time.perf_counter() - self._started - result.duration_s)
        if self._span is not None:
            self._span.set_attribute(genai.SANDBOX_END, str(result.ended))
            self._span.set_attribute(genai.SANDBOX_PROVISIONING_S, round(provisioning, 6))
        if self.metrics is not None:
            self.metrics.phase_seconds.labels("sandbox_provisioning").observe(provisioning)
            self.metrics.sandbox_runs.labels(self.backend, str(result.ended)).inc()

    def __exit__(self, *exc: object) -> None:
        if self.metrics is not None:
            self.metrics.sandboxes_active.labels(self.backend).dec()
        if self._span is not None:
            self._span.end()


def python_exec_tool(
    sandbox: Sandbox | None = None,
    *,
    gate: CodeGate | None = None,
    limits: Limits | None = None,
) -> Tool:
    """The tool, over ``sandbox`` (default: the backend ``AUTONOMIC_SANDBOX`` names, on first use)."""
    behaviour = PythonExec(sandbox, gate=gate, limits=limits)

    async def python_exec(code: str, files: dict[str, str] | None = None) -> dict[str, Any]:
        return await behaviour(code, files)

    return Tool(
        name=NAME,
        fn=python_exec,
        parameters=PARAMETERS,
        version="1",
        description=DESCRIPTION,
        idempotent=True,
        timeout=behaviour.limits.wall_seconds + 10.0,
    )


def _sandbox_from_env() -> Sandbox:
    from autonomic.adapters.sandbox import sandbox_from_env

    return sandbox_from_env()
