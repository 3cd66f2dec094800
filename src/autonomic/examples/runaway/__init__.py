"""The reconciliation-loop incident as a runnable agent: ``autonomic demo --scenario runaway``."""
