"""Reasoning from a field, from <think> tags, from structured output; untrusted values dropped."""

import math

from autonomic.core.entries import ModelCall, ModelTurn
from autonomic.core.reasoning import MAX_THOUGHTS, Reasoning, extract


def test_a_reasoning_field_becomes_thoughts():
    found = extract("the answer", "first I checked the ledger")
    assert found == Reasoning(thoughts="first I checked the ledger", source="field")


def test_think_tags_in_the_content():
    found = extract("<think>compare A and B</think>A it is", None)
    assert found is not None
    assert found.thoughts == "compare A and B"
    assert found.source == "tags"


def test_structured_output_gives_every_field():
    content = '{"reasoning": "B is cheaper", "alternatives": ["A", {"option": "C"}], "confidence": 85, "decision": "pick B"}'
    found = extract(content)
    assert found == Reasoning(
        thoughts="B is cheaper",
        alternatives=("A", '{"option": "C"}'),
        confidence=0.85,
        decision="pick B",
        source="structured",
    )


def test_nothing_given_is_none_and_bad_values_are_dropped():
    assert extract("plain answer") is None
    assert extract(None, "   ") is None
    assert extract('{"answer": 3}') is None
    odd = extract('{"reasoning": 5, "confidence": true, "alternatives": "A"}')
    assert odd is None
    nan = extract('{"reasoning": "x", "confidence": NaN}')
    assert nan is not None
    assert nan.confidence is None
    assert extract('{"reasoning": "x", "confidence": -3}').confidence == 0.0
    assert len(extract(None, "y" * (MAX_THOUGHTS + 10)).thoughts) == MAX_THOUGHTS
    assert not math.isnan(extract('{"thought": "t", "confidence": 0.5}').confidence)


def test_a_turn_writes_reasoning_only_when_there_is_some():
    plain = ModelTurn(1, "hi", (), "m", ModelCall())
    assert "reasoning" not in plain.to_payload()
    given = plain._replace(reasoning={"source": "field", "thoughts": "t"})
    payload = given.to_payload()
    assert payload["reasoning"] == {"source": "field", "thoughts": "t"}
    assert ModelTurn.from_payload(payload) == given
