"""The support-triage agent: plans once per kind of e-mail, reuses the plan: ``autonomic demo --scenario planning``."""
