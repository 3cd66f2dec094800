"""Resilience primitives shared by the model gateway, tools, agents and workflows."""

from autonomic.resilience.breaker import Breakers, BreakerState

__all__ = ["BreakerState", "Breakers"]
