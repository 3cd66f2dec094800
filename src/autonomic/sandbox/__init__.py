"""Sandboxing around the backends: the static-analysis gate and the escape/abuse probes."""
