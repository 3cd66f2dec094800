"""The span attribute names we emit, in one place.

The GenAI semantic conventions (``gen_ai.*``) are *incubating* in
``opentelemetry-semantic-conventions`` and some of their constants are already marked deprecated
(``gen_ai.system`` became ``gen_ai.provider.name``). Spelling them here as plain strings keeps the
hot path free of that import and confines a future rename to this module;
``tests/observability/test_genai.py`` checks each against the installed package, so a rename
fails a test instead of silently changing what operators query.
"""

from __future__ import annotations

# GenAI conventions (opentelemetry.semconv._incubating.attributes.gen_ai_attributes)
OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
SYSTEM = "gen_ai.system"  # deprecated alias of PROVIDER; still read by most backends
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
FINISH_REASONS = "gen_ai.response.finish_reasons"
AGENT_NAME = "gen_ai.agent.name"
AGENT_ID = "gen_ai.agent.id"
CONVERSATION_ID = "gen_ai.conversation.id"
TOOL_NAME = "gen_ai.tool.name"
TOOL_CALL_ID = "gen_ai.tool.call.id"
TOOL_CALL_ARGUMENTS = "gen_ai.tool.call.arguments"
TOOL_CALL_RESULT = "gen_ai.tool.call.result"
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"

# Operation names the conventions define.
OP_CHAT = "chat"
OP_EXECUTE_TOOL = "execute_tool"
OP_INVOKE_AGENT = "invoke_agent"

# Ours: no convention covers them (yet).
COST_USD = "autonomic.cost_usd"
CORRELATION_ID = "autonomic.correlation_id"
RUN_ID = "autonomic.run.id"
RUN_STATUS = "autonomic.run.status"
TENANT = "autonomic.tenant"
WORKER = "autonomic.worker"
RESUMED = "autonomic.resumed"
TURN = "autonomic.turn"
TOOL_VERSION = "autonomic.tool.version"
IDEMPOTENCY_KEY = "autonomic.tool.idempotency_key"
RISK = "autonomic.risk"
DECISION = "autonomic.decision"
REPLAYED = "autonomic.replayed"
OK = "autonomic.ok"
SANDBOX_BACKEND = "autonomic.sandbox.backend"
SANDBOX_PROVISIONING_S = "autonomic.sandbox.provisioning_s"
SANDBOX_END = "autonomic.sandbox.end_reason"
APPROVAL_ID = "autonomic.approval.id"
APPROVAL_OUTCOME = "autonomic.approval.outcome"
LATENCY_MS = "autonomic.latency_ms"
