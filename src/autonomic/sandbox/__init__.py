"""Sandboxing around the backends: the static-analysis gate, the escape/abuse probes, and the
microVM image builder (``image``)."""
