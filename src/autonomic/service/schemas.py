"""The request and response bodies of the API (pydantic), as ``/openapi.json`` publishes them.

Every request body forbids unknown fields (``extra="forbid"``): a misspelt field is a 422 naming
it, never silently ignored. Ids in paths are checked by pattern before any store is asked.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

RUN_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
APPROVAL_ID = r"^apr_[0-9a-f]{24}$"
KEY_ID = r"^key_[0-9a-f]{16}$"
AGENT_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StartRun(Strict):
    """Start a run of ``agent`` on ``task``; a worker drives it."""

    agent: str = Field(pattern=AGENT_NAME, description="an agent this service knows (GET /agents)")
    task: str | dict[str, Any] = Field(description="the task: text or a JSON object")
    metadata: dict[str, Any] = Field(default_factory=dict, description="per-run configuration")
    budget: dict[str, float] | None = Field(
        default=None, description="run budget limits: cost, tokens, tool_calls, turns, wall_seconds"
    )
    max_turns: int | None = Field(default=None, ge=1, le=10_000)


class Reason(Strict):
    reason: str = Field(min_length=1, max_length=2000)


class Resume(Strict):
    """Reopen a SUSPENDED or WAITING_FOR_HUMAN run, optionally raising its budget."""

    reason: str = Field(min_length=1, max_length=2000)
    budget: dict[str, float] | None = None
    metadata: dict[str, Any] | None = None


class Decide(Strict):
    """An approver's decision. Who decides comes from the credential, never from this body."""

    reason: str = Field(default="", max_length=2000)
    binding: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="the binding hash the approver was shown: refused if the arguments changed",
    )


class Deny(Strict):
    reason: str = Field(min_length=1, max_length=2000)


class CreateKey(Strict):
    tenant: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    role: str = Field(pattern=r"^(member|approver|admin)$")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,63}$")
    expires: str | None = Field(default=None, pattern=r"^\d+[smhdw]$", examples=["30d"])


class RunOut(BaseModel):
    id: str
    tenant: str
    agent: str
    agent_version: str
    model: str
    status: str
    status_reason: str | None
    created_at: float
    updated_at: float
    metadata: dict[str, Any]
    output: Any = None
    parent_run_id: str | None = None


class RunPage(BaseModel):
    runs: list[RunOut]
    next_cursor: str | None = Field(
        description="pass as ?cursor= for the next page; null at the end"
    )


class TimelineOut(BaseModel):
    run: RunOut
    items: list[dict[str, Any]]
    cost: dict[str, Any] = Field(description="what all the run's model calls cost (every page)")
    next_after: int | None = Field(
        default=None, description="pass as ?after= for the next rows; null at the end"
    )


class ApprovalOut(BaseModel):
    id: str
    run_id: str
    tenant: str
    tool: str
    arguments: dict[str, Any]
    binding: str
    explanation: str
    status: str
    requester: str | None
    created_at: float
    expires_at: float
    decided_by: list[str]
    reason: str | None


class AgentOut(BaseModel):
    name: str
    version: str
    model: str
    tools: list[str]
    health: dict[str, Any]


class KeyOut(BaseModel):
    id: str
    name: str
    tenant: str
    role: str
    state: str
    created_at: float
    expires_at: float | None
    created_by: str
    rotated_by: str | None
    revoked_by: str | None


class NewKey(BaseModel):
    key: KeyOut
    secret: str = Field(description="the credential, shown this once")


LETTER_ID = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
EVENT_TYPE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$"


class Publish(Strict):
    """An event to publish in the caller's tenant (checked against its type's schema)."""

    type: str = Field(pattern=EVENT_TYPE, description="a declared event type (GET /event-types)")
    data: Any = Field(description="the event's data: JSON, as its type's schema requires")
    correlation_id: str | None = Field(
        default=None, max_length=200, description="the ordering key; default: the event's id"
    )


class EventOut(BaseModel):
    position: str | None = Field(
        description="where it sits on the bus: its seq on the embedded bus, "
        "topic/partition/offset on Kafka (null for a dead letter's or a just-published event)"
    )
    published_at: float | None = Field(
        description="when the bus accepted it (epoch s); null where position is"
    )
    id: str
    type: str
    source: str
    time: float
    tenant: str
    correlation_id: str
    data: Any = None


class EventPage(BaseModel):
    events: list[EventOut]
    next_cursor: str | None = Field(
        description="pass as ?cursor= (with the same filters) for the next, older page; null "
        "at the end. On Kafka a page may hold fewer events than asked and still have one"
    )


class EventTypeOut(BaseModel):
    name: str
    description: str
    schema_: dict[str, Any] = Field(alias="schema")


class DeadLetterOut(BaseModel):
    id: str
    group: str
    topic: str
    tenant: str
    error: str
    attempts: int
    first_failure: float
    last_failure: float
    event: EventOut


class Drop(Strict):
    reason: str = Field(min_length=1, max_length=2000, description="why it is dropped (kept)")


class KpiOut(BaseModel):
    agent: str
    task_type: str
    runs: int
    ended: int
    completed: int
    completion_rate: float | None
    mean_steps_to_completion: float | None
    recovery_rate: float | None
    human_intervention_rate: float | None
    cost_per_task: float | None
    latency_p50: float | None
    latency_p95: float | None
    latency_p99: float | None


class KpiReport(BaseModel):
    since: float | None = Field(description="runs created at or after this (epoch s); null: all")
    runs: int = Field(description="how many runs were read")
    kpis: list[KpiOut]


class AuditReport(BaseModel):
    ok: bool
    first_break: dict[str, Any] | None
    breaks: list[dict[str, Any]]
    records: int
    runs: int
    entries: int
    legacy_runs: int
    checkpoints: int
    head: str
