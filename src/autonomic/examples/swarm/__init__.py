"""The code-audit swarm (``autonomic demo --scenario swarm``)."""
