"""Governance policies: risk rules, tool operational overrides, state-machine workflows."""
