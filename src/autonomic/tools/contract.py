"""A tool contract: name, version, JSON schema of the arguments, and operational metadata.

Arguments proposed by a model are untrusted: they are parsed and validated against the schema
before the tool runs, and a violation becomes an observation for the model, never a crash. Results
are untrusted too: with an ``output_schema`` they are validated before the model sees them.
``idempotent`` decides crash recovery: a started-but-unrecorded call is re-run (with the same
idempotency key) only when the contract says re-running is safe. The rest of the metadata (retry,
timeout, cost, data classification, reversibility, audit level, breaker thresholds) is enforced by
the engine and read by the risk policy; none of it lives in the tool's code, and a policy file can
change it (``autonomic.governance.policy.tool_policy``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import re
import types
import typing
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Union, get_args, get_origin, get_type_hints, overload

import jsonschema
import jsonschema.exceptions

from autonomic.core.messages import ToolSpec
from autonomic.errors import InvalidInput, ToolArgumentsInvalid
from autonomic.ports.credentials import ScopedCredential
from autonomic.tools.operational import AuditLevel, BreakerThresholds, DataClass, RetryPolicy
from autonomic.tools.quick_schema import quick_accept


@dataclass(frozen=True, slots=True)
class ToolContext:
    """What a tool learns about the call it serves.

    ``idempotency_key`` is ``run_id:seq`` of the call's intent: the same on every re-execution, so a
    tool that forwards it to an idempotent API (or dedups on it) applies its effect once.
    ``call_id`` is the id sent back to the model server for this call; servers repeat and reuse
    ids, so never key anything by it (the idempotency key is the call's identity).
    """

    run_id: str
    call_id: str
    idempotency_key: str
    tenant: str = "default"
    metadata: Mapping[str, Any] = field(default_factory=dict)
    """The run's metadata: per-run configuration a tool may read (a workspace, a database path)."""
    fence: int = 0
    """The run's fencing token: it grows each time a worker takes the run over. Pass it to a
    system that can refuse a stale writer (a conditional write, a version column): a paused worker
    that wakes after its run was taken over then writes with a lower fence than the system has
    already seen, and is refused (``autonomic.testing.fenced_sink`` shows the pattern)."""
    credentials: Mapping[str, ScopedCredential] = field(default_factory=dict)
    """The short-lived credentials this call's contract asked for (``@tool(credentials=[...])``),
    by name, scoped to this tenant, run and tool: ``ctx.credentials["github"].reveal()`` at the
    moment of use. Never an argument, never journaled (``autonomic.ports.credentials``)."""


ToolFunction = Callable[..., Any]
EFFECTS = frozenset({"write", "send", "pay", "delete", "external"})
"""The effects a contract can declare (any of them makes the tool consequential)."""
_FIELD_PATH = re.compile(r"^(?:\[\]|[A-Za-z0-9_$-]+(?:\[\])?)(?:\.[A-Za-z0-9_$-]+(?:\[\])?)*$")
_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_-]{0,63}$")


@dataclass(frozen=True)
class Tool:
    """A callable behind a contract.

    The function receives the validated arguments as keyword arguments, plus ``ctx`` if its
    signature asks for a parameter of that name.
    """

    name: str
    fn: ToolFunction
    parameters: dict[str, Any]
    version: str = "1"
    description: str = ""
    idempotent: bool = False
    timeout: float | None = None
    cost_estimate: float = 0.0
    """Expected cost of one call in the deployment's currency unit (risk rules and budgets)."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    audit: AuditLevel = AuditLevel.BASIC
    data_class: DataClass = DataClass.INTERNAL
    reversible: bool = True
    """Whether the effect can be undone (a compensating call exists); irreversible raises risk."""
    breaker: BreakerThresholds | None = None
    output_schema: dict[str, Any] | None = None
    credentials: tuple[str, ...] = ()
    """Names of the secrets each call needs, issued per call as short-lived scoped credentials
    (``ToolContext.credentials``); the model never sees them."""
    effects: tuple[str, ...] = ()
    """What the tool does to the world (``write``, ``send``, ``pay``, ``delete``, ``external``):
    a tool with effects is *consequential*, so the provenance gate traces its argument values
    (``autonomic.governance.provenance``). Empty: consequential unless the agent lists it as
    read-only."""
    trusted_output: bool = False
    """The tool's whole output comes from a source the operator controls (their own database):
    values in it count as trusted. Most tools return third-party text and must not say this."""
    trusted_fields: tuple[str, ...] = ()
    """Paths of structured output fields that are trusted although the rest is not, e.g.
    ``messages[].from`` (the mail server authenticated the sender) or ``contacts[].email``
    (the user's own address book). ``a.b`` walks a key, ``a[]`` every item of a list."""
    compensate: str | None = None
    """The name of the tool that undoes this one's effect (a saga's compensating action): on an
    abort with compensation the engine calls it once per completed call, newest first
    (``engine/compensation.py``). Its arguments are its parameters taken by name from this
    call's output (when a mapping) and then from this call's arguments. It must be idempotent:
    after a crash it is called again with the same idempotency key."""
    _validator: Any = field(default=None, init=False, repr=False, compare=False)
    _output_validator: Any = field(default=None, init=False, repr=False, compare=False)
    _accepts: Any = field(default=None, init=False, repr=False, compare=False)
    """The quick accept of ``parameters`` (``quick_schema.py``), ``None`` when it has none."""
    _output_accepts: Any = field(default=None, init=False, repr=False, compare=False)
    _wants_ctx: bool = field(default=False, init=False, repr=False, compare=False)
    _is_async: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise InvalidInput(
                f"invalid tool name {self.name!r}",
                hint="use letters, digits, '_' or '-', at most 64 characters, not starting with a digit",
            )
        try:
            jsonschema.Draft202012Validator.check_schema(self.parameters)
        except jsonschema.exceptions.SchemaError as exc:
            raise InvalidInput(
                f"tool {self.name}: its parameters are not a valid JSON schema: {exc.message}"
            ) from exc
        object.__setattr__(self, "_validator", jsonschema.Draft202012Validator(self.parameters))
        object.__setattr__(self, "_accepts", quick_accept(self.parameters))
        if self.output_schema is not None:
            try:
                jsonschema.Draft202012Validator.check_schema(self.output_schema)
            except jsonschema.exceptions.SchemaError as exc:
                raise InvalidInput(
                    f"tool {self.name}: its output_schema is not a valid JSON schema: {exc.message}"
                ) from exc
            validator = jsonschema.Draft202012Validator(self.output_schema)
            object.__setattr__(self, "_output_validator", validator)
            object.__setattr__(self, "_output_accepts", quick_accept(self.output_schema))
        if self.retry.attempts > 1 and not self.idempotent:
            raise InvalidInput(
                f"tool {self.name}: retry.attempts={self.retry.attempts} but the tool is not "
                "idempotent",
                hint="only idempotent tools are retried; declare idempotent=True or attempts=1",
            )
        if self.timeout is not None and self.timeout <= 0:
            raise InvalidInput(f"tool {self.name}: timeout must be positive, got {self.timeout}")
        if self.cost_estimate < 0:
            raise InvalidInput(f"tool {self.name}: cost_estimate must not be negative")
        object.__setattr__(self, "effects", tuple(self.effects))
        object.__setattr__(self, "trusted_fields", tuple(self.trusted_fields))
        unknown = sorted(set(self.effects) - EFFECTS)
        if unknown:
            raise InvalidInput(
                f"tool {self.name}: unknown effect(s) {', '.join(unknown)}",
                hint="effects are " + ", ".join(sorted(EFFECTS)),
            )
        for path in self.trusted_fields:
            if not _FIELD_PATH.match(path):
                raise InvalidInput(
                    f"tool {self.name}: trusted field {path!r} is not a field path",
                    hint="write keys joined by '.', '[]' after a list: messages[].from",
                )
        object.__setattr__(self, "_wants_ctx", "ctx" in inspect.signature(self.fn).parameters)
        object.__setattr__(self, "_is_async", inspect.iscoroutinefunction(self.fn))

    @property
    def ref(self) -> str:
        """``name@version``: what a run pins."""
        return f"{self.name}@{self.version}"

    def metadata(self) -> dict[str, Any]:
        """The operational metadata as JSON: what risk rules see and decisions record."""
        return {
            "name": self.name,
            "version": self.version,
            "idempotent": self.idempotent,
            "timeout": self.timeout,
            "cost_estimate": self.cost_estimate,
            "retry": self.retry.to_dict(),
            "audit": self.audit.value,
            "data_class": self.data_class.value,
            "reversible": self.reversible,
            "breaker": self.breaker.to_dict() if self.breaker else None,
        } | self._trust_metadata()

    def _trust_metadata(self) -> dict[str, Any]:
        """The effects and trust declarations, only when declared (older records stay as they
        were)."""
        out: dict[str, Any] = {}
        if self.effects:
            out["effects"] = list(self.effects)
        if self.trusted_output:
            out["trusted_output"] = True
        if self.trusted_fields:
            out["trusted_fields"] = list(self.trusted_fields)
        return out

    def with_policy(self, **changes: Any) -> Tool:
        """This tool with other operational metadata (a policy file's override); same code."""
        return dataclasses.replace(self, **changes)

    def validate_output(self, output: Any) -> None:
        """Raise ``InvalidInput`` naming the first violation of the output schema, if declared."""
        if self._output_validator is None:
            return
        if self._output_accepts is not None and self._output_accepts(output):
            return  # valid (the common case), without the full validator
        error = jsonschema.exceptions.best_match(self._output_validator.iter_errors(output))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
            raise InvalidInput(
                f"output of {self.ref} breaks its output_schema at {where}: {error.message}",
                hint="the tool (or the service behind it) changed; fix it or bump its version",
            )

    def spec(self) -> ToolSpec:
        """What the model is told about this tool."""
        return ToolSpec(name=self.name, description=self.description, parameters=self.parameters)

    def parse_arguments(self, raw: str) -> dict[str, Any]:
        """Parse and validate the model's raw argument text, or raise ``ToolArgumentsInvalid``."""
        try:
            value = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError as exc:
            raise ToolArgumentsInvalid(
                f"arguments for {self.name} are not valid JSON ({exc.msg} at position {exc.pos})",
                hint="send the arguments as one JSON object matching the tool's schema",
            ) from exc
        if not isinstance(value, dict):
            raise ToolArgumentsInvalid(
                f"arguments for {self.name} must be a JSON object, got {type(value).__name__}",
                hint="send the arguments as one JSON object matching the tool's schema",
            )
        self.validate(value)
        return value

    def validate(self, arguments: dict[str, Any]) -> None:
        """Raise ``ToolArgumentsInvalid`` naming the first violation of the schema."""
        if self._accepts is not None and self._accepts(arguments):
            return  # valid (the common case), without the full validator
        error = jsonschema.exceptions.best_match(self._validator.iter_errors(arguments))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
            raise ToolArgumentsInvalid(
                f"arguments for {self.name} are invalid at {where}: {error.message}",
                hint=f"the schema is {json.dumps(self.parameters, sort_keys=True)}",
            )

    async def invoke(self, arguments: dict[str, Any], ctx: ToolContext) -> Any:
        """Run the tool. Synchronous functions run in a thread so they cannot stall other runs."""
        kwargs = dict(arguments)
        if self._wants_ctx:
            kwargs["ctx"] = ctx
        if self._is_async:
            call: Awaitable[Any] = self.fn(**kwargs)
        else:
            call = asyncio.to_thread(self.fn, **kwargs)
        if self.timeout is not None:
            return await asyncio.wait_for(call, self.timeout)
        return await call


@overload
def tool(fn: ToolFunction, /) -> Tool: ...


@overload
def tool(
    *,
    name: str | None = None,
    version: str = "1",
    idempotent: bool = False,
    timeout: float | None = None,
    parameters: dict[str, Any] | None = None,
    cost_estimate: float = 0.0,
    retry: RetryPolicy | None = None,
    audit: AuditLevel | str = AuditLevel.BASIC,
    data_class: DataClass | str = DataClass.INTERNAL,
    reversible: bool = True,
    breaker: BreakerThresholds | None = None,
    output_schema: dict[str, Any] | None = None,
    credentials: typing.Sequence[str] = (),
    effects: tuple[str, ...] = (),
    trusted_output: bool = False,
    trusted_fields: tuple[str, ...] = (),
    compensate: Tool | str | None = None,
) -> Callable[[ToolFunction], Tool]: ...


def tool(
    fn: ToolFunction | None = None,
    /,
    *,
    name: str | None = None,
    version: str = "1",
    idempotent: bool = False,
    timeout: float | None = None,
    parameters: dict[str, Any] | None = None,
    cost_estimate: float = 0.0,
    retry: RetryPolicy | None = None,
    audit: AuditLevel | str = AuditLevel.BASIC,
    data_class: DataClass | str = DataClass.INTERNAL,
    reversible: bool = True,
    breaker: BreakerThresholds | None = None,
    output_schema: dict[str, Any] | None = None,
    credentials: typing.Sequence[str] = (),
    effects: tuple[str, ...] = (),
    trusted_output: bool = False,
    trusted_fields: tuple[str, ...] = (),
    compensate: Tool | str | None = None,
) -> Tool | Callable[[ToolFunction], Tool]:
    """Declare a tool from a typed function; the JSON schema comes from its annotations.

    Example::

        @tool(idempotent=True, data_class="financial", retry=RetryPolicy(attempts=3))
        def lookup(account: str, limit: int = 10) -> dict[str, object]:
            "Look up an account."
    """

    def wrap(f: ToolFunction) -> Tool:
        return Tool(
            name=name or f.__name__,
            fn=f,
            parameters=parameters if parameters is not None else schema_from_signature(f),
            version=version,
            description=inspect.getdoc(f) or "",
            idempotent=idempotent,
            timeout=timeout,
            cost_estimate=cost_estimate,
            retry=retry or RetryPolicy(),
            audit=AuditLevel(audit),
            data_class=DataClass(data_class),
            reversible=reversible,
            breaker=breaker,
            output_schema=output_schema,
            credentials=tuple(credentials),
            effects=tuple(effects),
            trusted_output=trusted_output,
            trusted_fields=tuple(trusted_fields),
            compensate=compensate.name if isinstance(compensate, Tool) else compensate,
        )

    return wrap(fn) if fn is not None else wrap


def schema_from_signature(fn: ToolFunction) -> dict[str, Any]:
    """A JSON schema for ``fn``'s keyword arguments (``ctx`` excluded), from its type hints."""
    hints = get_type_hints(fn)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for param in inspect.signature(fn).parameters.values():
        if param.name == "ctx":
            continue
        properties[param.name] = _schema_for(hints.get(param.name, Any))
        if param.default is inspect.Parameter.empty:
            required.append(param.name)
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


_SCALARS: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _schema_for(hint: Any) -> dict[str, Any]:
    if hint in _SCALARS:
        return {"type": _SCALARS[hint]}
    origin = get_origin(hint)
    args = get_args(hint)
    if origin in (Union, types.UnionType):
        return {"anyOf": [_schema_for(a) for a in args]}
    if hint is type(None):
        return {"type": "null"}
    if origin in (list, tuple, typing.Sequence) or hint in (list, tuple):
        return {"type": "array", "items": _schema_for(args[0])} if args else {"type": "array"}
    if origin is dict or hint is dict:
        return {"type": "object"}
    if origin is typing.Literal:
        return {"enum": list(args)}
    return {}
