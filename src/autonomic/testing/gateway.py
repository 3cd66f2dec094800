"""Helpers for testing code that uses the model gateway: build a validated configuration in one
expression, with retries fast enough for tests."""

from __future__ import annotations

from typing import Any

from autonomic.gateway.config import GatewayConfig, parse_config


def provider(name: str, base_url: str, **extra: Any) -> dict[str, Any]:
    """A provider entry (as it would appear in the YAML file) for ``gateway_config``."""
    return {"name": name, "base_url": base_url, "model": "gpt-4o-mini", **extra}


def gateway_config(*providers: dict[str, Any], **top: Any) -> GatewayConfig:
    """A validated configuration from provider entries; retries back off in milliseconds."""
    top.setdefault("retry", {"max_attempts": 4, "base_delay": 0.01, "max_delay": 0.05})
    return parse_config({"providers": list(providers), **top}, source="test.yaml")
