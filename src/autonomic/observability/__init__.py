"""Observability: traces (OpenTelemetry, OTLP), metrics (Prometheus), KPIs, alert notifications.

Nothing here is imported on a run's hot path unless the operator turned it on: the OpenTelemetry
SDK is loaded only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or the traces endpoint) is set, and
``prometheus_client`` only when a metrics port or ``PROMETHEUS_MULTIPROC_DIR`` asks for it. The
engine attaches both as hooks of the step protocol (``engine/tracing.py``,
``engine/metering.py``).
"""
