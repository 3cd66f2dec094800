"""Sandbox tooling that is not a backend: building the microVM image (``image``)."""
