"""The adversarial suite: injected tool outputs against realistic agents driven by a worst-case
model (``autonomic adversarial``; docs/guards.md). See ``suite`` for what is measured."""

from autonomic.testing.adversarial.suite import (
    DEFAULT_SETTING,
    SETTINGS,
    Case,
    Outcome,
    Report,
    cases,
    run_cases,
    run_suite,
    screen_rates,
    summarise,
)

__all__ = [
    "DEFAULT_SETTING",
    "SETTINGS",
    "Case",
    "Outcome",
    "Report",
    "cases",
    "run_cases",
    "run_suite",
    "screen_rates",
    "summarise",
]
