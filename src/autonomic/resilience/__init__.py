"""Resilience primitives shared by the model gateway, tools, agents and workflows."""

from autonomic.resilience.breaker import Breakers, BreakerState, BreakerStore
from autonomic.resilience.redis_breakers import RedisBreakers

__all__ = ["BreakerState", "BreakerStore", "Breakers", "RedisBreakers"]
