"""Context compression as pure functions: when, what to summarise, how to ask, how to apply.

When the next prompt would pass ``threshold`` (75 %) of the model's window, the older part of the
conversation (mostly tool outputs) is replaced by one message carrying *structured key-value
state* (a JSON object) that a model call produced from it. The system prompt is kept verbatim,
the recent turns are kept verbatim, and a tool call is never separated from its tool results
(servers reject a ``tool`` message whose call is gone).

Everything here is deterministic - same messages, same counter, same summary text, same result - so
the engine can journal the summary as an entry and a replayed run rebuilds exactly the prompt the
original run sent, without calling the model again. ``Compressor`` (the only part that does I/O)
runs the summarisation call and returns what to journal.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from autonomic.core.canonical import canonical_json
from autonomic.core.messages import Message, Role, ToolSpec
from autonomic.errors import ModelError
from autonomic.gateway.tokens import TokenCounter
from autonomic.ports.model import Model

STATE_MARKER = "[autonomic:state]"
"""Starts the message that carries the summarised state, so a later compression folds it in."""

SUMMARISER_PROMPT = (
    "You compress the working memory of an autonomous agent. You receive the earlier part of its "
    "conversation (tool calls, tool outputs, notes) and possibly the state summarised before. "
    "Answer with ONE JSON object and nothing else, with these keys: "
    '"facts" (object: key -> value, everything established that later steps may need: ids, '
    "amounts, names, results, errors), "
    '"done" (list of short strings: actions already taken, so they are not repeated), '
    '"open" (list of short strings: what is still to do or unresolved). '
    "Keep every identifier and number exactly. Drop chatter and raw dumps."
)

TRUNCATED = "…[truncated {n} chars]"


@dataclass(frozen=True, slots=True)
class CompressionPlan:
    """How a conversation splits: ``head`` and ``recent`` are kept, ``older`` is summarised."""

    head: tuple[Message, ...]
    older: tuple[Message, ...]
    recent: tuple[Message, ...]


def needs_compression(prompt_tokens: int, window: int, threshold: float = 0.75) -> bool:
    """Whether a prompt of ``prompt_tokens`` passes ``threshold`` of the ``window``."""
    return prompt_tokens > threshold * window


def plan_compression(
    messages: Sequence[Message], *, keep_recent: int = 6
) -> CompressionPlan | None:
    """Split ``messages``: the leading system messages, the older middle, the recent tail.

    The tail holds at least ``keep_recent`` messages and starts at a message that is not a tool
    result, so every tool call in the tail has its results and every result its call. Returns None
    when there is nothing older to summarise.
    """
    n_head = 0
    while n_head < len(messages) and messages[n_head].role is Role.SYSTEM:
        n_head += 1
    start = max(n_head, len(messages) - keep_recent)
    while start > n_head and messages[start].role is Role.TOOL:
        start -= 1  # keep a tool result with the assistant message that called it
    if start <= n_head:
        return None
    older = tuple(messages[n_head:start])
    if len(older) == 1 and is_state_message(older[0]):
        return None  # only the previous summary is older: nothing new to fold in
    return CompressionPlan(tuple(messages[:n_head]), older, tuple(messages[start:]))


def is_state_message(message: Message) -> bool:
    """Whether ``message`` carries state summarised by an earlier compression."""
    return message.role is Role.USER and (message.content or "").startswith(STATE_MARKER)


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + TRUNCATED.format(n=len(text) - limit)


def _transcript(older: Sequence[Message], per_message: int) -> str:
    lines: list[str] = []
    names: dict[str, str] = {}
    for m in older:
        if is_state_message(m):
            lines.append(f"previous state: {(m.content or '')[len(STATE_MARKER) :].strip()}")
            continue
        if m.role is Role.ASSISTANT:
            if m.content:
                lines.append(f"assistant: {_clip(m.content, per_message)}")
            for call in m.tool_calls:
                names[call.id] = call.name
                lines.append(f"call {call.name}#{call.id}: {_clip(call.arguments, per_message)}")
        elif m.role is Role.TOOL:
            name = names.get(m.tool_call_id or "", "tool")
            lines.append(f"result {name}#{m.tool_call_id}: {_clip(m.content or '', per_message)}")
        else:
            lines.append(f"{m.role.value}: {_clip(m.content or '', per_message)}")
    return "\n".join(lines)


def summary_request(
    plan: CompressionPlan, counter: TokenCounter, *, budget_tokens: int
) -> list[Message]:
    """The summarisation call's messages, clipped deterministically to ``budget_tokens``."""
    per_message = 8000
    while True:
        request = [
            Message(Role.SYSTEM, SUMMARISER_PROMPT),
            Message(Role.USER, _transcript(plan.older, per_message)),
        ]
        if counter.messages(request) <= budget_tokens or per_message <= 16:
            return request
        per_message //= 2


def parse_state(text: str | None) -> dict[str, Any]:
    """The summariser's answer as a JSON object. Model output is untrusted: anything else is a
    retryable ``ModelError`` (a code fence around the object is tolerated)."""
    raw = (text or "").strip()
    if raw.startswith("```"):
        raw = raw.strip("`").removeprefix("json").strip()
    try:
        state = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ModelError(
            f"the context summary is not valid JSON ({exc.msg} at position {exc.pos})",
            hint="the summariser is asked again; the extractive summary is used if it keeps failing",
            retryable=True,
        ) from None
    if not isinstance(state, dict):
        raise ModelError(
            f"the context summary is a JSON {type(state).__name__}, not an object", retryable=True
        )
    return state


def extractive_state(
    older: Sequence[Message], *, per_item: int = 200, max_items: int = 40
) -> dict[str, Any]:
    """A summary without a model: each tool output clipped, the latest ``max_items`` kept.
    Deterministic; the fallback when the summariser keeps answering garbage."""
    facts: dict[str, Any] = {}
    done: list[str] = []
    names: dict[str, str] = {}
    for m in older:
        if is_state_message(m):
            try:
                previous = parse_state((m.content or "")[len(STATE_MARKER) :])
            except ModelError:
                continue
            facts.update(
                previous.get("facts", {}) if isinstance(previous.get("facts"), dict) else {}
            )
            done.extend(str(d) for d in previous.get("done", []) if isinstance(d, str))
        for call in m.tool_calls:
            names[call.id] = call.name
            done.append(f"{call.name}({_clip(call.arguments, 80)})")
        if m.role is Role.TOOL:
            key = f"{names.get(m.tool_call_id or '', 'tool')}#{m.tool_call_id}"
            facts[key] = _clip(m.content or "", per_item)
    latest = dict(list(facts.items())[-max_items:])
    return {"facts": latest, "done": done[-max_items:], "open": []}


def state_message(state: dict[str, Any]) -> Message:
    """The message that carries ``state`` into the compressed conversation."""
    return Message(
        Role.USER,
        f"{STATE_MARKER} State carried over from earlier turns (JSON): {canonical_json(state)}",
    )


def apply_state(plan: CompressionPlan, state: dict[str, Any]) -> list[Message]:
    """System prompt verbatim, the state message, the recent turns verbatim."""
    return [*plan.head, state_message(state), *plan.recent]


def fit(
    messages: Sequence[Message],
    counter: TokenCounter,
    limit: int,
    tools: Sequence[ToolSpec] = (),
) -> list[Message]:
    """Last resort when even the compressed prompt is over ``limit``: clip the longest tool
    outputs and texts after the head (never the system prompt), longest first, deterministically."""
    out = list(messages)
    n_head = 0
    while n_head < len(out) and out[n_head].role is Role.SYSTEM:
        n_head += 1
    while counter.messages(out, tools) > limit:
        candidates = [i for i in range(n_head, len(out)) if len(out[i].content or "") > 64]
        if not candidates:
            return out
        i = max(candidates, key=lambda j: (len(out[j].content or ""), -j))
        m = out[i]
        content = m.content or ""
        out[i] = Message(
            m.role, _clip(content, len(content) // 2), m.tool_calls, m.tool_call_id, m.name
        )
    return out


@dataclass(frozen=True, slots=True)
class Compression:
    """One compression, as the engine journals it (a ``summary`` entry) and replays it."""

    messages: list[Message]
    state: dict[str, Any]
    keep_recent: int
    target: int
    replaced: int
    """How many older messages the state message replaced."""
    tokens_before: int
    tokens_after: int
    fallback: bool
    """True when the extractive state was used because the summariser's answers were unusable."""

    def to_entry(self) -> dict[str, Any]:
        """The journal payload: enough to rebuild ``messages`` from the conversation."""
        return {
            "state": self.state,
            "keep_recent": self.keep_recent,
            "target": self.target,
            "replaced": self.replaced,
            "tokens_before": self.tokens_before,
            "tokens_after": self.tokens_after,
            "fallback": self.fallback,
        }


def rebuild(
    messages: Sequence[Message],
    entry: dict[str, Any],
    counter: TokenCounter,
    tools: Sequence[ToolSpec] = (),
) -> list[Message]:
    """The compressed conversation from a journaled ``Compression.to_entry()``: what a replay
    uses instead of calling the summariser again. Same input, same output, byte for byte."""
    if entry["replaced"] == 0:
        return fit(messages, counter, entry["target"], tools)
    plan = plan_compression(messages, keep_recent=entry["keep_recent"])
    if plan is None:
        raise ValueError("the journaled compression does not match this conversation")
    return fit(apply_state(plan, entry["state"]), counter, entry["target"], tools)


class Compressor:
    """Compresses a conversation through a model when it nears the window."""

    def __init__(
        self,
        model: Model,
        counter: TokenCounter,
        *,
        window: int,
        threshold: float = 0.75,
        keep_recent: int = 6,
        attempts: int = 2,
    ) -> None:
        self.model = model
        self.counter = counter
        self.window = window
        self.threshold = threshold
        self.keep_recent = keep_recent
        self.attempts = attempts

    async def maybe_compress(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec] = ()
    ) -> Compression | None:
        """A compression if the prompt passes the threshold (None otherwise)."""
        before = self.counter.messages(messages, tools)
        if not needs_compression(before, self.window, self.threshold):
            return None
        target = int(self.threshold * self.window)
        keep = self.keep_recent
        plan = plan_compression(messages, keep_recent=keep)
        if plan is None:
            out = fit(messages, self.counter, target, tools)
            after = self.counter.messages(out, tools)
            return Compression(out, {}, 0, target, 0, before, after, False)
        state, fallback = await self._summarise(plan)
        out = apply_state(plan, state)
        while self.counter.messages(out, tools) > target and keep > 1:
            keep //= 2  # the recent tail alone is too big: keep fewer turns verbatim
            smaller = plan_compression(messages, keep_recent=keep)
            if smaller is None:
                break
            plan = smaller
            state, fallback = await self._summarise(plan)
            out = apply_state(plan, state)
        out = fit(out, self.counter, target, tools)
        after = self.counter.messages(out, tools)
        return Compression(out, state, keep, target, len(plan.older), before, after, fallback)

    async def _summarise(self, plan: CompressionPlan) -> tuple[dict[str, Any], bool]:
        request = summary_request(plan, self.counter, budget_tokens=int(self.window * 0.6))
        for _ in range(self.attempts):
            response = await self.model.complete(request, [])
            try:
                return parse_state(response.content), False
            except ModelError:
                continue
        return extractive_state(plan.older), True
