"""Our spelling of the GenAI semantic conventions agrees with the installed package (they are
incubating: a rename there must fail here, not silently change what operators query)."""

import warnings

import pytest

from autonomic.observability import genai

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as semconv

PAIRS = {
    "OPERATION": "GEN_AI_OPERATION_NAME",
    "PROVIDER": "GEN_AI_PROVIDER_NAME",
    "SYSTEM": "GEN_AI_SYSTEM",
    "REQUEST_MODEL": "GEN_AI_REQUEST_MODEL",
    "RESPONSE_MODEL": "GEN_AI_RESPONSE_MODEL",
    "INPUT_TOKENS": "GEN_AI_USAGE_INPUT_TOKENS",
    "OUTPUT_TOKENS": "GEN_AI_USAGE_OUTPUT_TOKENS",
    "FINISH_REASONS": "GEN_AI_RESPONSE_FINISH_REASONS",
    "AGENT_NAME": "GEN_AI_AGENT_NAME",
    "AGENT_ID": "GEN_AI_AGENT_ID",
    "CONVERSATION_ID": "GEN_AI_CONVERSATION_ID",
    "TOOL_NAME": "GEN_AI_TOOL_NAME",
    "TOOL_CALL_ID": "GEN_AI_TOOL_CALL_ID",
    "TOOL_CALL_ARGUMENTS": "GEN_AI_TOOL_CALL_ARGUMENTS",
    "TOOL_CALL_RESULT": "GEN_AI_TOOL_CALL_RESULT",
    "INPUT_MESSAGES": "GEN_AI_INPUT_MESSAGES",
    "OUTPUT_MESSAGES": "GEN_AI_OUTPUT_MESSAGES",
}


@pytest.mark.parametrize(("ours", "theirs"), sorted(PAIRS.items()))
def test_attribute_names_match_the_conventions(ours, theirs):
    assert getattr(genai, ours) == getattr(semconv, theirs)


def test_operation_names_match_the_conventions():
    values = semconv.GenAiOperationNameValues
    assert values.CHAT.value == genai.OP_CHAT
    assert values.EXECUTE_TOOL.value == genai.OP_EXECUTE_TOOL
    assert values.INVOKE_AGENT.value == genai.OP_INVOKE_AGENT
