"""The engine: drives runs through the step protocol, under leases, on any store."""
