"""The spans of a step - a model call's (``chat MODEL``) and a tool call's (``execute_tool
TOOL``) - as the few values of what the step journaled, made into attributes only when read.

Tracing costs a durable step what its two spans cost to make, queue and encode, and most of
what they carry is known before the step starts (the run's ids, the worker, the model's and
the tool's names) or is already in the journal's values (the turn's usage, cost and finish
reason; the call's idempotency key and the gates' decision). So the step keeps those values,
not dictionaries: a ``ChatSpan`` the few its ``ModelTurn`` reports, a ``ToolSpan`` those of the
call, its intent and decision - not the objects themselves, which a span waiting in the queue for
its batch would keep alive for the collector to walk. The batch processor's thread encodes them
(``otlp.encode_spans``)
from the OTLP encoding of what repeats - kept per drive here: the name and the leading
attributes of each model and tool - and of the few values that vary. An exporter other than
ours reads ``attributes`` and gets the dictionary, derived once, in the order the encoding
has; ``tests/observability/test_otlp.py`` checks that both give the SDK encoder's bytes.

Imported only when tracing is on (it imports the SDK).
"""

from __future__ import annotations

import random
import struct
import time
from typing import Any

from opentelemetry import trace as api
from opentelemetry.trace import Status, StatusCode

from autonomic.core.canonical import canonical_json
from autonomic.core.entries import DecisionRecord, ModelTurn, ToolIntent, ToolResult
from autonomic.core.messages import ToolCall
from autonomic.engine.failure import scrub
from autonomic.observability import genai
from autonomic.observability.otlp import (
    FLAGS_LOCAL,
    FLAGS_REMOTE,
    SPAN_TIMES,
    SpanAttribute,
    encode_attributes,
    encode_name,
    span_body,
)
from autonomic.observability.recorded_span import DerivedSpan, SpanSink, new_span_id
from autonomic.tools.contract import Tool

_time_ns = time.time_ns
_getrandbits = random.getrandbits
_pack_times = SPAN_TIMES.pack
_pack_ids = struct.Struct(">20sQ").pack
"""A span's first fields: the trace id's (the drive's ``StepSpans.trace``, which ends with the
span id's tag) and the span id."""
_pack_ids_under = struct.Struct(">20sQ2sQ").pack
"""``_pack_ids`` and the parent span id's field."""
_PARENT_TAG = b"\x22\x08"
_INTERNAL = b"\x30\x01"  # kind: SPAN_KIND_INTERNAL

# the attributes that vary from call to call, each with the encodings of its values
_INPUT_TOKENS = SpanAttribute(genai.INPUT_TOKENS)
_OUTPUT_TOKENS = SpanAttribute(genai.OUTPUT_TOKENS)
_TURN = SpanAttribute(genai.TURN)
_COST = SpanAttribute(genai.COST_USD)
_FINISH = SpanAttribute(genai.FINISH_REASONS)
_OUTPUT_MESSAGES = SpanAttribute(genai.OUTPUT_MESSAGES)
_CALL_ID = SpanAttribute(genai.TOOL_CALL_ID)
_KEY = SpanAttribute(genai.IDEMPOTENCY_KEY)
_DECISION = SpanAttribute(genai.DECISION)
_RISK = SpanAttribute(genai.RISK)
_ARGUMENTS = SpanAttribute(genai.TOOL_CALL_ARGUMENTS)
_OK = SpanAttribute(genai.OK)
_RESULT = SpanAttribute(genai.TOOL_CALL_RESULT)
_input_tokens, _output_tokens = _INPUT_TOKENS.known, _OUTPUT_TOKENS.known
_turns, _costs, _decisions, _oks = _TURN.known, _COST.known, _DECISION.known, _OK.known
_call_id_prefixes, _key_prefixes = _CALL_ID.prefixes, _KEY.prefixes
_finishes: dict[str, bytes] = {}
"""A finish reason's attribute (a list of one), by the reason."""


class StepSpans:
    """Makes the step spans of one drive of one run, and keeps the encodings they share."""

    __slots__ = (
        "chat_heads",
        "content",
        "correlation_id",
        "model",
        "root",
        "root_id",
        "run_id",
        "sink",
        "state",
        "tool_heads",
        "trace",
        "trace_id",
        "worker",
    )

    def __init__(
        self,
        sink: SpanSink,
        root: api.SpanContext,
        *,
        run_id: str,
        correlation_id: str,
        worker: str,
        model: str,
        content: bool,
    ) -> None:
        self.sink = sink
        self.root = root
        """The run's root span's context (sampled: the hook makes none for a dropped trace)."""
        self.run_id = run_id
        self.correlation_id = correlation_id
        self.worker = worker
        self.model = model
        """The run's model spec (the request model)."""
        self.content = content
        self.trace_id: int = root.trace_id
        self.root_id: int = root.span_id
        self.state = root.trace_state or None
        """The root's trace state, if it has one (the engine's roots have none)."""
        self.trace = b"\x0a\x10" + self.trace_id.to_bytes(16, "big") + b"\x12\x08"
        """The trace id's field and the span id's tag: how each of the drive's spans begins."""
        self.chat_heads: dict[tuple[str | None, str | None], tuple[bytes, bytes]] = {}
        """``encoded_chat_head``'s, by response model and provider."""
        self.tool_heads: dict[int, tuple[Tool, bytes, bytes]] = {}
        """``encoded_tool_head``'s, by the tool object's id."""

    # -- what the spans of a drive share --------------------------------------------------------

    def chat_name(self, model: str | None) -> str:
        return f"chat {model or self.model}"

    def chat_head(self, model: str | None, provider: str | None) -> dict[str, Any]:
        """A model call's leading attributes: the same for every call of the drive to one
        model through one provider."""
        spec = self.model
        served = provider or spec.partition(":")[0]
        return {
            genai.RUN_ID: self.run_id,
            genai.CORRELATION_ID: self.correlation_id,
            genai.OPERATION: genai.OP_CHAT,
            genai.REQUEST_MODEL: spec,
            genai.RESPONSE_MODEL: model or spec,
            genai.PROVIDER: served,
            genai.SYSTEM: served,
            genai.WORKER: self.worker,
        }

    def encoded_chat_head(self, model: str | None, provider: str | None) -> tuple[bytes, bytes]:
        """What a model call's span encodes to before its span id (the trace id), and from its
        parent (the root) to its leading attributes, name and kind included - except its start
        and end, which come before the attributes: ``(trace, (parent_name_kind, head))``."""
        key = (model, provider)
        found = self.chat_heads.get(key)
        if found is None:
            found = self.chat_heads[key] = (
                b"\x22\x08"
                + self.root_id.to_bytes(8, "big")
                + encode_name(self.chat_name(model))
                + _INTERNAL,
                encode_attributes(self.chat_head(model, provider)),
            )
        return found

    def tool_head(self, tool: Tool) -> dict[str, Any]:
        """A tool call's leading attributes: the same for every call of the drive to the tool."""
        return {
            genai.RUN_ID: self.run_id,
            genai.CORRELATION_ID: self.correlation_id,
            genai.OPERATION: genai.OP_EXECUTE_TOOL,
            genai.TOOL_NAME: tool.name,
            genai.TOOL_VERSION: tool.version,
        }

    def encoded_tool_head(self, tool: Tool) -> tuple[Tool, bytes, bytes]:
        """A tool call's name and kind fields, and its leading attributes, encoded - kept by
        the tool object's id (a frozen dataclass hashes all its fields), with the object to
        tell a reused id: ``(tool, name_kind, head)``."""
        found = self.tool_heads.get(id(tool))
        if found is None or found[0] is not tool:
            if len(self.tool_heads) >= 256:  # an agent's tools are a handful
                self.tool_heads.clear()
            found = self.tool_heads[id(tool)] = (
                tool,
                encode_name(f"execute_tool {tool.name}") + _INTERNAL,
                encode_attributes(self.tool_head(tool)),
            )
        return found


class ChatSpan(DerivedSpan):
    """A model call's span (GenAI conventions: operation, provider, request and response
    model, tokens, finish reason; its cost, turn and worker), from its ``ModelTurn``'s values.

    It keeps the values - numbers and names - not the turn, nor even its ``ModelCall`` and
    ``Usage``: a span waits in the batch processor's queue for a batch, and every container it
    holds on to outlives the step with it, counts towards the garbage collector's next young
    collection and is walked by each one until the batch is exported (holding the call and its
    usage was two more such objects a step; ``tests/observability/test_tracing.py``)."""

    _parent_remote = True
    _finish: str | None = None
    _output: str | None = None

    def __init__(self, steps: StepSpans, turn: ModelTurn, end_ns: int) -> None:
        """The span of the model call ``turn`` records, ended at ``end_ns`` (the caller hands
        it to the sink)."""
        self._sink = steps.sink
        self._span_id = _getrandbits(64) or new_span_id()
        self._start_time = end_ns - int((turn.latency_ms or 0.0) * 1_000_000)
        self._end_time = end_ns
        self._steps = steps
        self._turn = turn.turn
        self._model = turn.model
        call = turn.call
        usage = call.usage
        self._tokens_in = usage.input_tokens
        self._tokens_out = usage.output_tokens
        self._provider = call.provider
        self._cost = call.cost_usd
        if turn.finish_reason:
            self._finish = turn.finish_reason
        if steps.content:
            self._output = scrub(
                canonical_json(
                    {"content": turn.content, "tool_calls": [c.to_dict() for c in turn.tool_calls]}
                )
            )
        if steps.state is not None:  # encoded as any recorded span (never the engine's runs)
            self._state = steps.state
            self._derived = False

    # its trace and parent are the drive's root's (read from it: fewer stores a step)
    @property
    def _trace_id(self) -> int:  # type: ignore[override]
        return self._steps.trace_id

    @property
    def _parent_id(self) -> int:  # type: ignore[override]
        return self._steps.root_id

    @property
    def _parent_of(self) -> Any:
        return self._steps.root

    def _derive_name(self) -> str:
        return self._steps.chat_name(self._model)

    def _derive_attributes(self) -> dict[str, Any]:
        attrs = self._steps.chat_head(self._model, self._provider)
        attrs[genai.INPUT_TOKENS] = self._tokens_in
        attrs[genai.OUTPUT_TOKENS] = self._tokens_out
        attrs[genai.TURN] = self._turn
        attrs[genai.COST_USD] = float(self._cost or 0.0)  # (``ModelCall.cost``: made when read)
        if self._finish is not None:
            attrs[genai.FINISH_REASONS] = (self._finish,)
        if self._output is not None:
            attrs[genai.OUTPUT_MESSAGES] = self._output
        return attrs

    def _encoded(self) -> bytes:
        steps = self._steps
        model, provider = self._model, self._provider
        parent_name_kind, head = steps.chat_heads.get((model, provider)) or steps.encoded_chat_head(
            model, provider
        )
        tokens_in, tokens_out, turn = self._tokens_in, self._tokens_out, self._turn
        cost = float(self._cost or 0.0)
        parts = [
            _pack_ids(steps.trace, self._span_id),
            parent_name_kind,
            _pack_times(0x39, self._start_time, 0x41, self._end_time),
            head,
            _input_tokens.get(tokens_in) or _INPUT_TOKENS(tokens_in),
            _output_tokens.get(tokens_out) or _OUTPUT_TOKENS(tokens_out),
            _turns.get(turn) or _TURN(turn),
            _costs.get(cost) or _COST(cost),
        ]
        finish = self._finish
        if finish is not None:
            parts.append(_finishes.get(finish) or _finish_reason(finish))
        if self._output is not None:
            parts.append(_OUTPUT_MESSAGES.text(self._output))
        return span_body(self, parts, FLAGS_REMOTE)


def _finish_reason(reason: str) -> bytes:
    found = _finishes[reason] = _FINISH((reason,))
    if len(_finishes) > 64:  # reasons are a handful: a model making them up is not kept
        _finishes.clear()
    return found


class ToolSpan(DerivedSpan):
    """A tool call's span (name, version, call id, idempotency key, the gates' decision and
    risk, whether it succeeded), from the call's, its intent's and its decision's values."""

    _parent_remote = False
    _key: str | None = None
    _risk: str | None = None
    _ok: bool | None = None
    _arguments: str | None = None
    _result: str | None = None

    def __init__(
        self,
        steps: StepSpans,
        parent: Any,
        tool: Tool,
        call: ToolCall,
        turn: int,
        intent: ToolIntent | None,
        decision: DecisionRecord | None,
    ) -> None:
        """A tool call's span under ``parent`` (its turn's span, a ``RecordedSpan``: a
        ``ChatSpan`` or a resumed turn's), started now; ``finished`` or ``raised`` ends it."""
        self._sink = steps.sink
        self._span_id = _getrandbits(64) or new_span_id()
        self._parent_id = parent._span_id
        self._parent_of = parent
        self._start_time = _time_ns()
        self._steps = steps
        self._tool = tool
        self._call_id = call.id
        self._turn = turn
        if intent is not None:
            self._key = intent.key
        # no journaled decision: no gate had an opinion (the gatekeeper journals none then)
        if decision is None:
            self._decision = "allow"
        else:
            self._decision = decision.verdict
            if decision.risk:
                self._risk = decision.risk
        if steps.content:
            self._arguments = scrub(canonical_json(call.arguments))
        if parent._state is not None:  # encoded as any recorded span (never the engine's runs)
            self._state = parent._state
            self._derived = False

    def finished(self, result: ToolResult) -> None:
        """End the span with the call's outcome: whether it succeeded (an ERROR status with
        the error's code if not) and, when content is on, its output."""
        if self._end_time is not None:
            return
        ok = result.ok
        content = None
        if not ok:
            self.set_status(Status(StatusCode.ERROR, str((result.error or {}).get("code"))))
        elif self._steps.content:
            content = scrub(canonical_json(result.output))
        if self._attrs is not None:  # read or changed while the tool ran
            self.set_attribute(genai.OK, ok)
            if content is not None:
                self.set_attribute(genai.TOOL_CALL_RESULT, content)
        else:
            self._ok, self._result = ok, content
        self._end_time = _time_ns()
        self._sink.emit(self)

    def raised(self, exc: BaseException) -> None:
        """End the span with the exception that left the call's effect (recorded, with an
        ERROR status, as ``Tracing.current`` records one; a cancellation just ends it)."""
        if isinstance(exc, Exception) and self._end_time is None:
            self.record_exception(exc)
            self.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        self.end()

    @property
    def _trace_id(self) -> int:  # type: ignore[override]
        return self._steps.trace_id

    def _derive_name(self) -> str:
        return f"execute_tool {self._tool.name}"

    def _derive_attributes(self) -> dict[str, Any]:
        attrs = self._steps.tool_head(self._tool)
        attrs[genai.TOOL_CALL_ID] = self._call_id
        attrs[genai.TURN] = self._turn
        if self._key is not None:
            attrs[genai.IDEMPOTENCY_KEY] = self._key
        attrs[genai.DECISION] = self._decision
        if self._risk is not None:
            attrs[genai.RISK] = self._risk
        if self._arguments is not None:
            attrs[genai.TOOL_CALL_ARGUMENTS] = self._arguments
        if self._ok is not None:
            attrs[genai.OK] = self._ok
        if self._result is not None:
            attrs[genai.TOOL_CALL_RESULT] = self._result
        return attrs

    def _encoded(self) -> bytes:
        steps = self._steps
        tool = self._tool
        found = steps.tool_heads.get(id(tool))
        if found is None or found[0] is not tool:
            found = steps.encoded_tool_head(tool)
        _, name_kind, head = found
        call_id = self._call_id.encode()
        turn, decision = self._turn, self._decision
        parts = [
            _pack_ids_under(steps.trace, self._span_id, _PARENT_TAG, self._parent_id),
            name_kind,
            _pack_times(0x39, self._start_time, 0x41, self._end_time),
            head,
            _call_id_prefixes.get(len(call_id)) or _CALL_ID.prefix(len(call_id)),
            call_id,
            _turns.get(turn) or _TURN(turn),
        ]
        if self._key is not None:
            key = self._key.encode()
            parts += (_key_prefixes.get(len(key)) or _KEY.prefix(len(key)), key)
        parts.append(_decisions.get(decision) or _DECISION(decision))
        if self._risk is not None:
            parts.append(_RISK(self._risk))
        if self._arguments is not None:
            parts.append(_ARGUMENTS.text(self._arguments))
        if self._ok is not None:
            parts.append(_oks.get(self._ok) or _OK(self._ok))
        if self._result is not None:
            parts.append(_RESULT.text(self._result))
        return span_body(self, parts, FLAGS_LOCAL)
