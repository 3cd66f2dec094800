"""The provenance gate: a consequential call whose values came only from untrusted content, or that
nobody planned for, waits for a human - whatever the untrusted text said and however it said it.

The injection screen recognises attacks by their wording, and attackers change wording. This gate
does not read the wording at all. Before a *consequential* tool call (its contract declares
``effects`` - writes, sends, pays, deletes, reaches outside - or the policy names it, or the agent
did not declare it read-only), it asks two questions:

1. **Where did each value come from?** Every argument that matters (recipients, accounts, links,
   paths, identifiers, amounts, the addresses and links inside free text: ``ValueRules``) is traced
   in the run's ledger (``autonomic.governance.ledger``). A value seen in trusted content - the
   task, the agent's instructions, the run's metadata, a human's comment, a tool output or field
   the tool's contract declares trusted - is fine. A value seen *only* in untrusted content (a
   document, a web page, an e-mail body, another agent's message) makes the call need approval
   (or blocks it: ``ProvenancePolicy.untrusted``); so does, for the kinds where the policy says so
   (recipients, accounts, links), a value seen nowhere. The approval quotes the value and where it
   came from: the tool, the step, a short excerpt - so a person decides in seconds.
2. **Was it expected?** A run whose plan was made before it read anything untrusted (the planner
   sees only the task's pattern) expects the consequential tools its plan names; an agent without
   a plan declares them (``Agent(expected_actions=[...])``). A consequential tool outside them,
   proposed after untrusted content entered the run, needs approval.

The gate is deterministic given the journal: the ledger is folded from ``RunState.contents``
(cached per run and extended, never held only in memory), and its decision is journaled and
replayed like every gate's.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from autonomic.core.run import Run
from autonomic.core.state import RunState
from autonomic.errors import InvalidInput
from autonomic.governance.action import ActionKind, ProposedAction
from autonomic.governance.decision import Decision, Finding, Verdict
from autonomic.governance.ledger import Ledger, OutputTrust, Trace
from autonomic.governance.values import ValueKind, ValueRules, canonical, embedded
from autonomic.tools.contract import EFFECTS, Tool

GATE_NAME = "provenance"

_UNSEEN_DEFAULT: dict[ValueKind, Verdict] = {
    ValueKind.RECIPIENT: Verdict.APPROVE,
    ValueKind.ACCOUNT: Verdict.APPROVE,
    ValueKind.URL: Verdict.APPROVE,
}


@dataclass(frozen=True)
class ProvenancePolicy:
    """How the provenance gate decides (``Engine(provenance=ProvenancePolicy(...))``).

    Args:
        rules: which arguments carry values that matter (by name and shape).
        traced: the kinds traced; leave out ``amount`` or ``text`` to trace fewer (fewer
            approvals, a wider door: ``autonomic adversarial`` measures both).
        untrusted: what a value seen only in untrusted content gets: ``APPROVE`` or ``BLOCK``.
        unseen: per kind, what a value seen nowhere gets (the model made it up, or rewrote an
            untrusted value beyond recognition); kinds not named are allowed.
        ids_as_handles: identifiers a tool returned under an id-like key are handles the
            tool issued, trusted as identifiers.
        trusted_fields: honour the contracts' ``trusted_output`` and ``trusted_fields``.
        plan_pinned: check calls against the plan's (or the agent's declared) expected tools.
        consequential: tools always treated as consequential (besides those with ``effects``).
        unmarked_consequential: a tool with no declared effects that the agent did not list as
            read-only is consequential too (stricter; off by default since the policy is on in
            every engine: tools that declare nothing would ask for every value the model wrote).
        mark: untrusted content reaches the model inside a per-run boundary
            (``autonomic.governance.boundary``). Off by default: it changes the prompt every
            model sees (results wrapped, the system prompt longer), which models that parse
            tool results - the scripted ones of tests and demos - must be ready for, and its
            effect on a real model is not measured here; the gates above do not depend on it.
        text_effects: free text's embedded addresses, links and accounts are traced only for
            tools with one of these effects (or with none declared): text that is *sent* carries
            a link to someone; text a tool writes to the user's own files or records stays with
            the user, and its destination (the path, the record) is what is traced there.
    """

    rules: ValueRules = field(default_factory=ValueRules)
    traced: frozenset[ValueKind] = frozenset(ValueKind)
    untrusted: Verdict = Verdict.APPROVE
    unseen: Mapping[ValueKind, Verdict] = field(default_factory=lambda: dict(_UNSEEN_DEFAULT))
    ids_as_handles: bool = True
    trusted_fields: bool = True
    plan_pinned: bool = True
    consequential: frozenset[str] = frozenset()
    unmarked_consequential: bool = False
    mark: bool = False
    text_effects: frozenset[str] = frozenset({"send", "pay", "external"})

    def __post_init__(self) -> None:
        if self.untrusted not in (Verdict.APPROVE, Verdict.BLOCK):
            raise InvalidInput(
                f"provenance policy: untrusted must be approve or block, got {self.untrusted}"
            )
        object.__setattr__(self, "traced", frozenset(ValueKind(k) for k in self.traced))
        object.__setattr__(self, "consequential", frozenset(self.consequential))
        object.__setattr__(self, "text_effects", frozenset(self.text_effects))
        unknown = sorted(self.text_effects - EFFECTS)
        if unknown:
            raise InvalidInput(
                f"provenance policy: text_effects {', '.join(unknown)} unknown",
                hint="effects are " + ", ".join(sorted(EFFECTS)),
            )

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> ProvenancePolicy:
        """A policy from configuration (YAML/JSON): the keys of the constructor, kinds and
        verdicts by name. An unknown key or value is an error naming it."""
        known = {
            "traced",
            "untrusted",
            "unseen",
            "ids_as_handles",
            "trusted_fields",
            "plan_pinned",
            "consequential",
            "unmarked_consequential",
            "mark",
            "names",
            "ignore",
            "text_effects",
        }
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidInput(
                f"provenance policy: unknown key(s) {', '.join(unknown)}",
                hint="keys are " + ", ".join(sorted(known)),
            )
        try:
            kwargs: dict[str, Any] = {}
            if "traced" in data:
                kwargs["traced"] = frozenset(ValueKind(k) for k in data["traced"])
            if "untrusted" in data:
                kwargs["untrusted"] = _verdict(data["untrusted"])
            if "unseen" in data:
                kwargs["unseen"] = {ValueKind(k): _verdict(v) for k, v in data["unseen"].items()}
            for key in (
                "ids_as_handles",
                "trusted_fields",
                "plan_pinned",
                "unmarked_consequential",
                "mark",
            ):
                if key in data:
                    if not isinstance(data[key], bool):
                        raise ValueError(f"{key} must be true or false")
                    kwargs[key] = data[key]
            if "consequential" in data:
                kwargs["consequential"] = frozenset(str(t) for t in data["consequential"])
            if "text_effects" in data:
                kwargs["text_effects"] = frozenset(str(t) for t in data["text_effects"])
            if "names" in data or "ignore" in data:
                kwargs["rules"] = ValueRules(
                    names={ValueKind(k): str(v) for k, v in (data.get("names") or {}).items()},
                    ignore=frozenset(str(k) for k in data.get("ignore") or ()),
                )
        except (ValueError, TypeError, AttributeError) as exc:
            raise InvalidInput(
                f"provenance policy: {exc}",
                hint="kinds: " + ", ".join(k.value for k in ValueKind) + "; verdicts: allow, "
                "approve, block",
            ) from None
        return ProvenancePolicy(**kwargs)


def _verdict(value: Any) -> Verdict:
    text = str(value).strip().lower()
    aliases = {"allow": Verdict.ALLOW, "approve": Verdict.APPROVE, "block": Verdict.BLOCK}
    if text not in aliases:
        raise ValueError(f"{value!r} is not allow, approve or block")
    return aliases[text]


def plan_tools(state: RunState, tools: Mapping[str, Tool]) -> frozenset[str] | None:
    """The tools a run's plan names (``None``: the run has no plan with steps). The plan is made
    before the first turn - before any tool output - from the task's pattern only."""
    plan = state.plan
    if plan is None or not plan.steps:
        return None
    text = " ".join(plan.steps).lower()
    return frozenset(
        name for name in tools if re.search(rf"(?<![\w]){re.escape(name.lower())}(?![\w])", text)
    )


class ProvenanceGate:
    """The gate (see the module docstring). One per engine; a small per-run ledger cache."""

    name = GATE_NAME

    def __init__(self, policy: ProvenancePolicy | None = None, *, cache_runs: int = 256) -> None:
        self.policy = policy or ProvenancePolicy()
        self._ledgers: OrderedDict[str, tuple[Any, Ledger]] = OrderedDict()
        self._cache_runs = cache_runs

    def consequential(self, action: ProposedAction) -> bool:
        """Whether the action is one whose values are traced."""
        contract = action.contract
        if contract is not None and contract.effects:
            return True
        if action.tool in self.policy.consequential:
            return True
        return self.policy.unmarked_consequential and not action.read_only

    async def check(self, action: ProposedAction) -> Decision | None:
        if action.kind is not ActionKind.TOOL_CALL or action.run is None:
            return None
        if not self.consequential(action):
            return None
        run, state, contract = action.in_run()
        contracts = dict(action.contracts) or {contract.name: contract}
        ledger = self.ledger(run, state, contracts)
        findings: list[Finding] = []
        traced: list[dict[str, Any]] = []
        if self.policy.plan_pinned:
            finding = self._expected(action, state, contracts, ledger)
            if finding is not None:
                findings.append(finding)
        for path, kind, written, trace in self._traces(action, ledger):
            record: dict[str, Any] = {
                "argument": path,
                "kind": kind.value,
                "value": _short(written),
                "trace": trace.verdict,
            }
            if trace.sightings:
                record["sources"] = [s.to_dict() for s in trace.sightings]
            traced.append(record)
            finding = self._finding(action.tool, path, kind, written, trace)
            if finding is not None:
                findings.append(finding)
        if not findings:
            return Decision(
                Verdict.ALLOW,
                "every traced value came from trusted content",
                gate=GATE_NAME,
                evidence={"values": traced} if traced else {},
            )
        ordered = tuple(sorted(findings, key=lambda f: f.verdict.severity, reverse=True))
        more = f" (and {len(ordered) - 1} more)" if len(ordered) > 1 else ""
        return Decision(
            ordered[0].verdict,
            ordered[0].reason + more,
            gate=GATE_NAME,
            evidence={"values": traced, "findings": [f.to_dict() for f in ordered]},
            findings=ordered,
        )

    def _traces(
        self, action: ProposedAction, ledger: Ledger
    ) -> list[tuple[str, ValueKind, str, Trace]]:
        out: list[tuple[str, ValueKind, str, Trace]] = []
        traced = self.policy.traced
        effects = set(action.contract.effects) if action.contract is not None else set()
        if effects and not effects & self.policy.text_effects:
            traced = traced - {ValueKind.TEXT}
        for argument in self.policy.rules.arguments(action.arguments):
            if argument.kind not in traced:
                continue
            if argument.kind is ValueKind.TEXT:
                if not isinstance(argument.value, str):
                    continue
                for kind, written, normal in embedded(argument.value[:100_000]):
                    out.append((argument.path, kind, written, ledger.trace(kind, normal)))
                continue
            found = canonical(argument.kind, argument.value)
            if found is None:
                continue
            written = str(argument.value)
            out.append((argument.path, argument.kind, written, ledger.trace(argument.kind, found)))
        return out

    def _finding(
        self, tool: str, path: str, kind: ValueKind, written: str, trace: Trace
    ) -> Finding | None:
        if trace.trusted:
            return None
        value = _short(written)
        if trace.sightings:
            verdict = self.policy.untrusted
            code = "provenance.untrusted_value"
            where = "; ".join(s.describe() for s in trace.sightings[:2])
            reason = (
                f"{tool}.{path} = {value!r} ({kind.value}) appears only in untrusted content: "
                f"{where}; approve only if this value is what the user wants"
            )
        else:
            verdict = self.policy.unseen.get(kind, Verdict.ALLOW)
            if verdict is Verdict.ALLOW:
                return None
            code = "provenance.unseen_value"
            reason = (
                f"{tool}.{path} = {value!r} ({kind.value}) appears nowhere in the task, the "
                "operator's input or trusted tool data (the model wrote it); approve only if it "
                "is right"
            )
        return Finding(
            "provenance",
            code,
            verdict,
            reason,
            {
                "argument": path,
                "kind": kind.value,
                "value": value,
                "sources": [s.to_dict() for s in trace.sightings],
            },
        )

    def _expected(
        self,
        action: ProposedAction,
        state: RunState,
        contracts: Mapping[str, Tool],
        ledger: Ledger,
    ) -> Finding | None:
        planned = plan_tools(state, contracts)
        declared = action.expected
        if planned is None and declared is None:
            return None
        expected = (planned or frozenset()) | (declared or frozenset())
        if action.tool in expected or ledger.first_untrusted is None:
            return None
        why = "the run's plan" if planned is not None else "the agent's expected actions"
        return Finding(
            "provenance",
            "plan.unexpected_action",
            Verdict.APPROVE,
            f"{action.tool} is not among the consequential actions {why} named "
            f"({', '.join(sorted(expected)) or 'none'}) and was proposed after untrusted content "
            f"entered the run (step {ledger.first_untrusted}); approve only if the task needs it",
            {"expected": sorted(expected), "after_seq": ledger.first_untrusted},
        )

    def ledger(self, run: Run, state: RunState, contracts: Mapping[str, Tool]) -> Ledger:
        """The run's ledger, extended to the state's contents (rebuilt when the state is not a
        continuation of what was indexed: another fold, other contracts)."""
        key = tuple(
            sorted(
                (n, t.trusted_output, t.trusted_fields)
                for n, t in contracts.items()
                if t.trusted_output or t.trusted_fields
            )
        )
        cached = self._ledgers.get(run.id)
        ledger: Ledger | None = None
        if cached is not None:
            cached_key, candidate = cached
            seen = candidate.contents
            if (
                cached_key == key
                and len(seen) <= len(state.contents)
                and (not seen or state.contents[len(seen) - 1] is seen[-1])
            ):
                ledger = candidate
        if ledger is None:
            trust = (
                {n: OutputTrust(t.trusted_output, t.trusted_fields) for n, t in contracts.items()}
                if self.policy.trusted_fields
                else {}
            )
            ledger = Ledger(trust, ids_as_handles=self.policy.ids_as_handles)
            if run.metadata:
                ledger.add_trusted("metadata", dict(run.metadata))
            self._ledgers[run.id] = (key, ledger)
            while len(self._ledgers) > self._cache_runs:
                self._ledgers.popitem(last=False)
        self._ledgers.move_to_end(run.id)
        ledger.extend(state.contents)
        return ledger


def _short(value: str, limit: int = 120) -> str:
    return value if len(value) <= limit else value[: limit - 3] + "..."
