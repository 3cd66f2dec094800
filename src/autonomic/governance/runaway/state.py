"""A run's guard history, kept incrementally so the cost of a check stays flat as runs grow.

``GuardState`` holds only what guards look at: usage totals (turns, tokens, cost, calls per tool,
start time), a bounded window of recent tool steps with their vectors, recent plans, and recent
hand-offs between agents. Each change is a small JSON *record*; the engine journals it with the
step, and ``GuardState.rebuild`` folds the records back into the same state after a crash — replay
is folding, as everywhere else in autonomic. Texts are cut to ``TEXT_LIMIT`` characters before they
are embedded, live and on rebuild alike, so both give the same vectors.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from autonomic.core.canonical import canonical_json
from autonomic.errors import InvalidInput
from autonomic.governance.action import ActionKind, ProposedAction
from autonomic.governance.runaway.normalise import normalise_text, stable_value
from autonomic.ports.embedder import Embedder, Vector

TEXT_LIMIT = 1000
"""Characters of a thought, plan or argument text that count; the rest is ignored."""

QUOTE_LIMIT = 200
"""Characters of a step quoted in evidence."""


class Features:
    """What the guards compare, computed once per proposed action.

    The texts are normalised at once (exact and cheap); their vectors are embedded on first use,
    all in one ``embed`` call as before, and kept. Most steps never need one: a read-only call is
    never compared by vector, nor is a call whose tool has no earlier step in the window, so an
    ordinary step costs no embedding at all — and a step that is compared later embeds then, once.
    The vectors are those of the same texts in the same batch either way: decisions are unchanged.
    """

    __slots__ = (
        "_embedder",
        "_texts",
        "_vectors",
        "args_key",
        "embedded_kind",
        "plan",
        "signature",
        "subject",
        "trace",
    )

    def __init__(
        self,
        *,
        args_key: str,
        signature: str,
        trace: str,
        plan: str | None,
        subject: str,
        kind: ActionKind,
        embedder: Embedder,
    ) -> None:
        self.args_key = args_key
        """Canonical JSON of the arguments exactly as proposed."""
        self.signature = signature
        """The arguments with volatile values replaced (see ``normalise.stable_arguments``)."""
        self.trace = trace
        """Normalised thought + tool + stable arguments: the text that is embedded."""
        self.plan = plan
        self.subject = subject
        self.embedded_kind = kind
        texts = [trace]
        if plan is not None:
            texts.append(plan)
        if kind is ActionKind.DELEGATE:
            texts.append(subject)
        self._texts = texts if kind is not ActionKind.MODEL_CALL else []
        self._embedder = embedder
        self._vectors: list[Vector] | None = None

    def _embedded(self) -> list[Vector]:
        if self._vectors is None:
            self._vectors = self._embedder.embed(self._texts) if self._texts else []
        return self._vectors

    @property
    def vector(self) -> Vector:
        vectors = self._embedded()
        return vectors[0] if vectors else ()

    @property
    def plan_vector(self) -> Vector | None:
        vectors = self._embedded()
        return vectors[1] if self.plan is not None and len(vectors) > 1 else None

    @property
    def subject_vector(self) -> Vector | None:
        if self.embedded_kind is not ActionKind.DELEGATE:
            return None
        return self._embedded()[-1]


@dataclass(frozen=True, slots=True)
class Step:
    """One executed tool call as loop detection remembers it."""

    seq: int
    tool: str
    args_key: str
    signature: str
    trace: str
    features: Features
    read_only: bool

    @property
    def vector(self) -> Vector:
        """The trace's vector, embedded the first time a check compares this step."""
        return self.features.vector


@dataclass(frozen=True, slots=True)
class Plan:
    seq: int
    text: str
    features: Features

    @property
    def vector(self) -> Vector:
        vector = self.features.plan_vector
        return vector if vector is not None else ()


@dataclass(frozen=True, slots=True)
class Handoff:
    """Work handed from one agent to another (sent by this run or received by it)."""

    seq: int
    source: str
    target: str
    subject: str
    vector: Vector


class GuardState:
    """The incremental history guards read. Not thread-safe: one per run, owned by its worker.

    Args:
        embedder: turns traces, plans and subjects into vectors (default: hashed n-grams).
        window: how many recent tool steps loop detection compares with.
        plan_window: how many recent plans are kept.
        handoff_window: how many recent hand-offs ping-pong detection looks at.
    """

    def __init__(
        self,
        embedder: Embedder | None = None,
        *,
        window: int = 20,
        plan_window: int = 6,
        handoff_window: int = 12,
    ) -> None:
        if min(window, plan_window, handoff_window) < 1:
            raise InvalidInput("guard state: windows must be at least 1", hint="use the defaults")
        if embedder is None:  # the offline default; bootstrap passes the configured one
            from autonomic.governance.runaway.hashed import HashedNgramEmbedder

            embedder = HashedNgramEmbedder()
        self.embedder: Embedder = embedder
        self.steps: deque[Step] = deque(maxlen=window)
        self.plans: deque[Plan] = deque(maxlen=plan_window)
        self.handoffs: deque[Handoff] = deque(maxlen=handoff_window)
        self.started_at: float | None = None
        self.turns = 0
        self.tokens = 0
        self.cost = 0.0
        self.tool_calls: dict[str, int] = {}
        self.last_seq = 0
        self._cache: tuple[ProposedAction, Features] | None = None

    # -- reading -------------------------------------------------------------------------

    def features(self, action: ProposedAction) -> Features:
        """The action's comparable features; computed once and reused by ``record``."""
        if self._cache is not None and self._cache[0] is action:
            return self._cache[1]
        args = dict(action.arguments)
        args_key = canonical_json(args)
        stripped = stable_value(args)
        # nothing volatile (the common case): the same object, so the same canonical JSON
        signature = args_key if stripped is args else canonical_json(stripped)
        thought = normalise_text(action.thought[:TEXT_LIMIT])
        plan = normalise_text(action.plan[:TEXT_LIMIT]) if action.plan else None
        feats = Features(
            args_key=args_key,
            signature=signature,
            trace=f"{thought} | {action.tool} {signature[:TEXT_LIMIT]}",
            plan=plan,
            subject=normalise_text(action.subject[:TEXT_LIMIT]),
            kind=action.kind,
            embedder=self.embedder,
        )
        self._cache = (action, feats)
        return feats

    # -- changing (each returns the record to journal) -------------------------------------

    def start(self, at: float) -> dict[str, Any]:
        """The run started at ``at``: the origin of the wall-clock budget."""
        return self._apply({"k": "start", "at": at})

    def record(self, action: ProposedAction, *, seq: int) -> dict[str, Any]:
        """``action`` passed the guards and is being executed as journal step ``seq``."""
        return self._apply(
            {
                "k": "step",
                "seq": seq,
                "kind": action.kind.value,
                "agent": action.agent,
                "tool": action.tool,
                "arguments": dict(action.arguments),
                "thought": action.thought[:TEXT_LIMIT],
                "plan": action.plan[:TEXT_LIMIT] if action.plan else None,
                "target": action.target,
                "subject": action.subject[:TEXT_LIMIT],
                "read_only": action.read_only,
                "now": action.now,
            },
            action,
        )

    def executed(self, action: ProposedAction, *, seq: int) -> None:
        """``record`` without building the record: the same change, for a caller that journals
        nothing (the gate, which folds its history from the journal's own entries)."""
        self._step(action, seq)

    def charge(self, *, tokens: int, cost: float) -> dict[str, Any]:
        """What a call actually consumed (after it returned), from the gateway's accounting."""
        return self._apply({"k": "usage", "tokens": tokens, "cost": cost})

    def received(self, *, source: str, target: str, subject: str, seq: int) -> dict[str, Any]:
        """Another agent (``source``) handed this run's agent (``target``) work on ``subject``."""
        return self._apply(
            {"k": "received", "seq": seq, "source": source, "target": target, "subject": subject}
        )

    def acknowledge(self, *, seq: int) -> dict[str, Any]:
        """A human looked at a loop finding and resumed: forget the repeats seen so far."""
        return self._apply({"k": "ack", "seq": seq})

    def apply(self, record: Mapping[str, Any]) -> None:
        """Fold one journaled record into the state (what ``rebuild`` does for each)."""
        self._apply(record)

    @classmethod
    def rebuild(
        cls, records: Iterable[Mapping[str, Any]], embedder: Embedder | None = None, **config: int
    ) -> GuardState:
        """The state after ``records``, in journal order: recovery after a crash."""
        state = cls(embedder, **config)
        for record in records:
            state.apply(record)
        return state

    def _apply(
        self, record: Mapping[str, Any], action: ProposedAction | None = None
    ) -> dict[str, Any]:
        kind = record.get("k")
        if kind == "start":
            self.started_at = float(record["at"])
        elif kind == "usage":
            self.tokens += int(record["tokens"])
            self.cost += float(record["cost"])
        elif kind == "ack":
            self.steps.clear()
            self.plans.clear()
            self.handoffs.clear()
            self.last_seq = max(self.last_seq, int(record["seq"]))
        elif kind == "received":
            seq = int(record["seq"])
            subject = normalise_text(str(record["subject"])[:TEXT_LIMIT])
            vector = self.embedder.embed([subject])[0]
            self.handoffs.append(
                Handoff(seq, str(record["source"]), str(record["target"]), subject, vector)
            )
            self.last_seq = max(self.last_seq, seq)
        elif kind == "step":
            self._apply_step(record, action)
        else:
            raise InvalidInput(
                f"guard state: unknown record kind {kind!r}",
                hint="records come from GuardState.start/record/charge/received/acknowledge",
            )
        return dict(record)

    def _apply_step(self, record: Mapping[str, Any], action: ProposedAction | None) -> None:
        if action is None:
            action = ProposedAction(
                kind=ActionKind(record["kind"]),
                agent=str(record["agent"]),
                tool=str(record["tool"]),
                arguments=dict(record["arguments"]),
                thought=str(record["thought"]),
                plan=record.get("plan"),
                target=record.get("target"),
                subject=str(record.get("subject", "")),
                read_only=bool(record.get("read_only", False)),
                now=float(record.get("now", 0.0)),
            )
        self._step(action, int(record["seq"]))

    def _step(self, action: ProposedAction, seq: int) -> None:
        self.last_seq = max(self.last_seq, seq)
        if self.started_at is None and action.now:
            self.started_at = action.now
        if action.kind is ActionKind.MODEL_CALL:
            self.turns += 1
            return
        feats = self.features(action)
        if feats.plan is not None:
            self.plans.append(Plan(seq, feats.plan, feats))
        if action.kind is ActionKind.DELEGATE:
            assert feats.subject_vector is not None
            target = action.target or ""
            self.handoffs.append(
                Handoff(seq, action.agent, target, feats.subject, feats.subject_vector)
            )
            return
        self.tool_calls[action.tool] = self.tool_calls.get(action.tool, 0) + 1
        self.steps.append(
            Step(
                seq,
                action.tool,
                feats.args_key,
                feats.signature,
                feats.trace[:QUOTE_LIMIT],
                feats,
                action.read_only,
            )
        )
