"""The API's routes, one module per noun: runs, approvals, agents, events, dead letters, KPIs and
audit, keys, system (health, metrics)."""
