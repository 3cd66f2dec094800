"""Model adapters: scripted (deterministic, offline) and OpenAI-compatible servers."""
