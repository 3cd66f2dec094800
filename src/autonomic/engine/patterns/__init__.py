"""Reasoning patterns. Each drives a run session; the engine handles leases and recovery."""
