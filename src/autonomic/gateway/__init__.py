"""The model gateway: providers from configuration behind shared rate limits, retries, circuit
breakers, fallback routing, cost accounting, token counting and context compression.

``Gateway`` implements the model port, so the engine uses it like any other model::

    gateway = Gateway(load_config("gateway.yaml"))
    with call_context(priority="background", timeout=60, run_id=run.id, tenant=run.tenant):
        response = await gateway.complete(messages, tools)
    response.provider, response.cost_usd, response.waited_s

``RedisBuckets`` and ``RedisPlanCache`` live in ``autonomic.adapters.redis``; the names here load
them on first use, so importing the gateway never imports Redis code.
"""

from typing import TYPE_CHECKING, Any

from autonomic.gateway.compression import Compression, Compressor
from autonomic.gateway.config import (
    BreakerPolicy,
    GatewayConfig,
    RetryPolicy,
    load_config,
    parse_config,
)
from autonomic.gateway.cost import CostLedger, Estimate, Spend
from autonomic.gateway.gateway import Gateway, backoff_delay, check_tool_calls
from autonomic.gateway.metrics import GatewayMetrics
from autonomic.gateway.plan_cache import LocalPlanCache
from autonomic.gateway.provider import Limits, Pricing, Priority, Provider, ProviderKind
from autonomic.gateway.ratelimit import LocalBuckets
from autonomic.gateway.split import ModelSplit, Phase
from autonomic.gateway.tokens import TokenCounter
from autonomic.ports.model import CallContext, call_context, current_call

if TYPE_CHECKING:
    from autonomic.adapters.redis.buckets import RedisBuckets
    from autonomic.adapters.redis.plan_cache import RedisPlanCache

__all__ = [
    "BreakerPolicy",
    "CallContext",
    "Compression",
    "Compressor",
    "CostLedger",
    "Estimate",
    "Gateway",
    "GatewayConfig",
    "GatewayMetrics",
    "Limits",
    "LocalBuckets",
    "LocalPlanCache",
    "ModelSplit",
    "Phase",
    "Pricing",
    "Priority",
    "Provider",
    "ProviderKind",
    "RedisBuckets",
    "RedisPlanCache",
    "RetryPolicy",
    "Spend",
    "TokenCounter",
    "backoff_delay",
    "call_context",
    "check_tool_calls",
    "current_call",
    "load_config",
    "parse_config",
]


def __getattr__(name: str) -> Any:
    if name == "RedisBuckets":
        from autonomic.adapters.redis.buckets import RedisBuckets

        return RedisBuckets
    if name == "RedisPlanCache":
        from autonomic.adapters.redis.plan_cache import RedisPlanCache

        return RedisPlanCache
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
