"""Deterministic models for tests and the offline demo.

``ScriptedModel`` plays a fixed list of turns; ``FunctionModel`` asks a Python function, which can
read the conversation (tool results included) and decide like a real model would, deterministically.
Both pick their answer from the conversation alone, never from hidden state, so a run resumed in
another process gets the same answers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from autonomic.core.canonical import canonical_json
from autonomic.core.messages import Message, ModelResponse, Role, ToolCall, ToolSpec, Usage
from autonomic.errors import InvalidInput, ModelError


def estimate_tokens(text: str) -> int:
    """A rough count (4 characters a token) for models that report no usage."""
    return max(1, len(text) // 4)


def _usage(messages: Sequence[Message], content: str | None, calls: Sequence[ToolCall]) -> Usage:
    prompt = sum(len(m.content or "") for m in messages)
    completion = len(content or "") + sum(len(c.arguments) for c in calls)
    return Usage(input_tokens=max(1, prompt // 4), output_tokens=max(1, completion // 4))


def assistant_turn(messages: Sequence[Message]) -> int:
    """How many assistant messages precede this call: the index of the turn being asked for."""
    return sum(1 for m in messages if m.role is Role.ASSISTANT)


class ScriptedModel:
    """Plays ``turns`` in order; turn *n* answers the *n*-th model call of a run."""

    def __init__(self, turns: Sequence[dict[str, Any]], *, name: str = "scripted") -> None:
        self._turns = [_validate_turn(i, t) for i, t in enumerate(turns, start=1)]
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    @classmethod
    def from_file(cls, path: str | Path) -> ScriptedModel:
        """Load a script: JSON ``{"turns": [{"content": ..., "tool_calls": [...]}, ...]}``."""
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InvalidInput(f"script {p} does not exist") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidInput(
                f"script {p} is not valid JSON: {exc}",
                hint='a script is {"turns": [{"content": "...", "tool_calls": [...]}]}',
            ) from None
        if not isinstance(data, dict) or not isinstance(data.get("turns"), list):
            raise InvalidInput(
                f'script {p} must be an object with a list under "turns"',
                hint='a script is {"turns": [{"content": "...", "tool_calls": [...]}]}',
            )
        try:
            return cls(data["turns"], name=f"scripted:{p.name}")
        except InvalidInput as exc:
            raise InvalidInput(f"script {p}: {exc.message}", hint=exc.hint) from None

    async def complete(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> ModelResponse:
        turn = assistant_turn(messages)
        if turn >= len(self._turns):
            raise ModelError(
                f"the script has {len(self._turns)} turns and turn {turn + 1} was asked for",
                hint="add turns to the script or end it with a turn that has no tool_calls",
            )
        spec = self._turns[turn]
        calls = tuple(
            ToolCall(id=f"call_{turn + 1}_{i}", name=c["name"], arguments=c["arguments"])
            for i, c in enumerate(spec["tool_calls"], start=1)
        )
        content = spec.get("content")
        return ModelResponse(
            content=content,
            tool_calls=calls,
            model=self._name,
            usage=_usage(messages, content, calls),
            finish_reason="tool_calls" if calls else "stop",
            reasoning=spec.get("reasoning"),
        )


def _validate_turn(index: int, turn: Any) -> dict[str, Any]:
    hint = 'each turn is {"content": "text", "tool_calls": [{"name": "tool", "arguments": {...}}]}'
    if not isinstance(turn, dict):
        raise InvalidInput(f"turn {index} must be an object, got {type(turn).__name__}", hint=hint)
    unknown = set(turn) - {"content", "tool_calls", "reasoning"}
    if unknown:
        raise InvalidInput(f"turn {index} has unknown keys {sorted(unknown)}", hint=hint)
    content = turn.get("content")
    if content is not None and not isinstance(content, str):
        raise InvalidInput(f"turn {index}: content must be a string", hint=hint)
    raw_calls = turn.get("tool_calls", [])
    if not isinstance(raw_calls, list):
        raise InvalidInput(f"turn {index}: tool_calls must be a list", hint=hint)
    calls: list[dict[str, str]] = []
    for j, call in enumerate(raw_calls):
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            raise InvalidInput(f"turn {index}: tool_calls[{j}] needs a string name", hint=hint)
        args = call.get("arguments", {})
        if not isinstance(args, (dict, str)):
            raise InvalidInput(
                f"turn {index}: tool_calls[{j}].arguments must be an object (or raw text)",
                hint=hint,
            )
        calls.append(
            {
                "name": call["name"],
                "arguments": args if isinstance(args, str) else canonical_json(args),
            }
        )
    if content is None and not calls:
        raise InvalidInput(f"turn {index} has neither content nor tool_calls", hint=hint)
    reasoning = turn.get("reasoning")
    if reasoning is not None and not isinstance(reasoning, str):
        raise InvalidInput(f"turn {index}: reasoning must be a string", hint=hint)
    return {"content": content, "tool_calls": calls, "reasoning": reasoning}


Policy = Callable[[Sequence[Message], Sequence[ToolSpec]], ModelResponse]


class FunctionModel:
    """A model whose answers come from a deterministic Python function of the conversation."""

    def __init__(self, policy: Policy, *, name: str) -> None:
        self._policy = policy
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    async def complete(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> ModelResponse:
        response = self._policy(messages, tools)
        if response.usage.input_tokens or response.usage.output_tokens:
            return response
        return ModelResponse(
            content=response.content,
            tool_calls=response.tool_calls,
            model=response.model or self._name,
            usage=_usage(messages, response.content, response.tool_calls),
            finish_reason=response.finish_reason
            or ("tool_calls" if response.tool_calls else "stop"),
        )
