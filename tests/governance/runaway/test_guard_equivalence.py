"""Loop detection decides exactly as it did before it was made lazy (issue 17, item 1).

The reference below is the pre-change algorithm, kept verbatim in spirit: every step's trace, plan
and subject embedded eagerly with the plain per-character loop, and every comparison a dense dot
product. On random histories (exact repeats, near repeats with volatile values, plans, reads,
acknowledgements) the shipped guards must give the same findings with the same evidence,
similarities included - not merely the same verdicts.
"""

from __future__ import annotations

import math
import re
import zlib
from collections import deque
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from autonomic.core.canonical import canonical_json
from autonomic.governance.runaway import ActionKind, Guards, GuardState, LoopPolicy, ProposedAction
from autonomic.governance.runaway.hashed import HashedNgramEmbedder
from autonomic.governance.runaway.normalise import normalise_text, stable_arguments
from autonomic.governance.runaway.state import TEXT_LIMIT

_WORD = re.compile(r"\w+")


def reference_embed(text: str, dim: int = 512, n: int = 3, word_weight: float = 2.0) -> list[float]:
    """The hashed n-gram embedding as the plain loop computed it before the change."""
    vec = [0.0] * dim
    data = f" {text} ".encode()
    for i in range(len(data) - n + 1):
        h = zlib.crc32(data[i : i + n])
        vec[h & (dim - 1)] += 1.0 if h & 0x80000000 else -1.0
    for word in _WORD.findall(text):
        h = zlib.crc32(word.encode(), 0x5BD1E995)
        vec[h & (dim - 1)] += word_weight if h & 0x80000000 else -word_weight
    norm = math.sqrt(sum(v * v for v in vec))
    if norm == 0.0:
        return vec
    return [v * (1.0 / norm) for v in vec]


def reference_dot(a: list[float], b: list[float]) -> float:
    return float(sum(a[i] * b[i] for i in range(len(a))))


class ReferenceLoops:
    """The loop check before the change: eager vectors, a dense dot against every earlier step."""

    def __init__(self, policy: LoopPolicy, window: int = 20) -> None:
        self.policy = policy
        self.steps: deque[dict[str, Any]] = deque(maxlen=window)
        self.plans: deque[tuple[int, str, list[float]]] = deque(maxlen=6)

    def _features(self, action: ProposedAction) -> dict[str, Any]:
        args = dict(action.arguments)
        signature = stable_arguments(args)
        thought = normalise_text(action.thought[:TEXT_LIMIT])
        trace = f"{thought} | {action.tool} {signature[:TEXT_LIMIT]}"
        plan = normalise_text(action.plan[:TEXT_LIMIT]) if action.plan else None
        return {
            "args_key": canonical_json(args),
            "signature": signature,
            "trace": trace,
            "vector": reference_embed(trace),
            "plan": plan,
            "plan_vector": reference_embed(plan) if plan is not None else None,
        }

    def check(self, action: ProposedAction) -> list[tuple[str, list[tuple[int, float]]]]:
        p, f = self.policy, self._features(action)
        allowed = p.read_repeats if action.read_only else p.repeats
        exact: list[tuple[int, float]] = []
        near: list[tuple[int, float]] = []
        for step in self.steps:
            if step["tool"] != action.tool:
                continue
            if step["args_key"] == f["args_key"]:
                exact.append((step["seq"], 1.0))
                near.append((step["seq"], 1.0))
                continue
            if step["signature"] == f["signature"]:
                similarity = 1.0
            elif action.read_only:
                continue
            else:
                similarity = reference_dot(step["vector"], f["vector"])
            if similarity >= p.threshold:
                near.append((step["seq"], round(similarity, 4)))
        found: list[tuple[str, list[tuple[int, float]]]] = []
        if len(exact) >= allowed:
            found.append(("loop.exact_repeat", exact))
        elif len(near) >= allowed:
            found.append(("loop.near_repeat", near))
        if f["plan"] is not None:
            plans = [
                (seq, round(s, 4))
                for seq, _, vector in self.plans
                if (s := reference_dot(vector, f["plan_vector"])) >= p.threshold
            ]
            if len(plans) >= p.plan_repeats:
                found.append(("loop.plan_repeat", plans))
        return found

    def record(self, action: ProposedAction, seq: int) -> None:
        f = self._features(action)
        if f["plan"] is not None:
            self.plans.append((seq, f["plan"], f["plan_vector"]))
        self.steps.append({"seq": seq, "tool": action.tool, **f})

    def acknowledge(self) -> None:
        self.steps.clear()
        self.plans.clear()


_TOOLS = ("delete_records", "post_entry", "get_job_status")
_THOUGHTS = (
    "the stale records are still there so clean them up again",
    "the stale records are still there, clean them up once more",
    "post the monthly entry for the account before the sync",
    "check whether the export job has finished",
)


@st.composite
def actions(draw: st.DrawFn) -> ProposedAction:
    """Few tools and few wordings, so exact, near (by vector) and plan repeats all occur."""
    thought = draw(st.sampled_from(_THOUGHTS)) + f" (attempt {draw(st.integers(0, 99))})"
    args: dict[str, Any] = {"account": draw(st.sampled_from(["1001", "1002"]))}
    if draw(st.booleans()):
        args["ts"] = draw(st.integers(1_700_000_000, 1_700_000_100))
    if draw(st.booleans()):
        args["ref"] = f"item-{draw(st.integers(0, 3))}"
    plan = draw(
        st.sampled_from(
            [None, None, "clean the ledger then sync", "clean the ledger, then sync", "report"]
        )
    )
    return ProposedAction(
        ActionKind.TOOL_CALL,
        "agent",
        tool=draw(st.sampled_from(_TOOLS)),
        arguments=args,
        thought=thought,
        plan=plan,
        read_only=draw(st.integers(0, 3)) == 0,
    )


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(actions(), st.booleans()), min_size=1, max_size=60))
def test_loop_findings_equal_the_eager_reference_on_random_histories(
    history: list[tuple[ProposedAction, bool]],
) -> None:
    policy = LoopPolicy(threshold=0.9, repeats=2, plan_repeats=1)
    guards, state = Guards.default(loops=policy), GuardState()
    reference = ReferenceLoops(policy)
    for seq, (action, acknowledge) in enumerate(history, 1):
        decision = guards.check(action, state)
        got = [
            (f.code, [(s["seq"], s["similarity"]) for s in f.evidence["similar"]])
            for f in decision.findings
            if f.code.startswith("loop.")
        ]
        assert got == reference.check(action), f"step {seq}: {action}"
        if got and acknowledge:
            state.acknowledge(seq=seq)
            reference.acknowledge()
        elif not got:
            state.record(action, seq=seq)
            reference.record(action, seq)


def test_the_embedder_gives_the_reference_vectors_bit_for_bit() -> None:
    embedder = HashedNgramEmbedder()
    for text in ("", "a", "clean up stale records attempt <n>", "ünïcödé | tool {}" * 20):
        assert list(embedder.embed_one(text)) == reference_embed(text)


def test_a_step_that_is_never_compared_is_never_embedded() -> None:
    """The laziness the speed comes from: reads and first calls of a tool embed nothing."""

    class Counting(HashedNgramEmbedder):
        calls = 0

        def embed(self, texts: Any) -> list[Any]:
            Counting.calls += 1
            return super().embed(texts)

    state, guards = GuardState(Counting()), Guards.default()
    for seq, tool in enumerate(("read_a", "read_b", "write_c"), 1):
        action = ProposedAction(
            ActionKind.TOOL_CALL, "a", tool=tool, arguments={"k": seq}, read_only=tool != "write_c"
        )
        assert guards.check(action, state).allowed
        state.record(action, seq=seq)
    assert Counting.calls == 0
    again = ProposedAction(ActionKind.TOOL_CALL, "a", tool="write_c", arguments={"k": 9})
    assert guards.check(again, state).allowed  # a second write_c: now both are embedded, once
    assert Counting.calls == 2
