"""Counters adapters: in-memory (one process) and Redis (shared by a fleet of workers)."""
