"""The API's routes, one module per noun: runs, approvals, agents, keys, system (health, metrics)."""
