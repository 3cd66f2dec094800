"""Prometheus metrics: what a worker exposes on ``/metrics`` (``autonomic worker --metrics-port``).

The metric objects are made once per process, on first use (``Metrics.get()``), so a process that
never turns metrics on never imports ``prometheus_client``. With ``PROMETHEUS_MULTIPROC_DIR`` set
(several worker processes behind one scrape target, e.g. a pre-fork server) the values go through
that directory and ``serve`` answers with the sum over processes; gauges declare how to combine.

Names and labels are the contract with the shipped dashboard and alerts
(``deploy/grafana/autonomic.json``, ``deploy/prometheus/alerts.yml``; docs/observability.md).
Labels only ever hold bounded, non-secret values: agent, tool, provider, model, status, phase.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

from autonomic.errors import ConfigError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

PHASES = ("sandbox_provisioning", "state_read", "inference", "tool", "messaging")
"""The per-phase latency breakdown (``autonomic_phase_seconds{phase=...}``)."""

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

_LOCK = threading.Lock()
_SHARED: Metrics | None = None


class Metrics:
    """Every metric autonomic exports, made in one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        from prometheus_client import REGISTRY, Counter, Gauge, Histogram

        reg = registry if registry is not None else REGISTRY
        self.registry = reg
        self.phase_seconds = Histogram(
            "autonomic_phase_seconds",
            "Latency of one phase of a step (sandbox_provisioning, state_read, inference, tool, "
            "messaging).",
            ["phase"],
            buckets=BUCKETS,
            registry=reg,
        )
        self.runs = Counter(
            "autonomic_runs",
            "Runs entering a status (a transition committed by a worker).",
            ["agent", "status"],
            registry=reg,
        )
        self.steps = Counter(
            "autonomic_steps",
            "Steps taken (model turns and tool results).",
            ["agent", "kind"],
            registry=reg,
        )
        self.tool_calls = Counter(
            "autonomic_tool_calls", "Tool calls executed.", ["tool", "ok"], registry=reg
        )
        self.tokens = Counter(
            "autonomic_tokens",
            "Model tokens used.",
            ["provider", "model", "direction"],
            registry=reg,
        )
        self.cost = Counter(
            "autonomic_cost_usd",
            "Dollars spent on model calls.",
            ["provider", "model"],
            registry=reg,
        )
        self.runs_current = Gauge(
            "autonomic_runs_current",
            "Runs now in a status that waits (RUNNING, WAITING_FOR_HUMAN, SUSPENDED, PENDING).",
            ["status"],
            registry=reg,
            multiprocess_mode="max",
        )
        self.runs_stuck = Gauge(
            "autonomic_runs_stuck",
            "RUNNING runs whose lease has expired: no worker is driving them.",
            registry=reg,
            multiprocess_mode="max",
        )
        self.approvals_pending = Gauge(
            "autonomic_approvals_pending",
            "Approvals waiting for a human.",
            registry=reg,
            multiprocess_mode="max",
        )
        self.approval_oldest_age = Gauge(
            "autonomic_approval_oldest_age_seconds",
            "Age of the oldest pending approval.",
            registry=reg,
            multiprocess_mode="max",
        )
        self.approval_next_expiry = Gauge(
            "autonomic_approval_next_expiry_seconds",
            "Seconds until the first pending approval expires (absent when none is pending).",
            registry=reg,
            multiprocess_mode="min",
        )
        self.breakers_open = Gauge(
            "autonomic_breaker_open",
            "1 while a circuit breaker is open or half-open, by breaker key.",
            ["key", "state"],
            registry=reg,
            multiprocess_mode="max",
        )
        self.sandboxes_active = Gauge(
            "autonomic_sandboxes_active",
            "Sandbox executions in progress (the pool in use).",
            ["backend"],
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.sandbox_runs = Counter(
            "autonomic_sandbox_executions",
            "Sandbox executions by how they ended.",
            ["backend", "ended"],
            registry=reg,
        )
        # The event bus's seam (issue 13): the relay and consumers set these.
        self.outbox_pending = Gauge(
            "autonomic_outbox_pending",
            "Events committed but not yet published by the outbox relay.",
            registry=reg,
            multiprocess_mode="max",
        )
        self.consumer_lag = Gauge(
            "autonomic_consumer_lag",
            "Events not yet consumed, by consumer group.",
            ["group"],
            registry=reg,
            multiprocess_mode="max",
        )
        self.dead_letters = Counter(
            "autonomic_dead_letters",
            "Events moved to the dead-letter topic.",
            ["group"],
            registry=reg,
        )

    @staticmethod
    def get() -> Metrics:
        """This process's metrics, made on first use."""
        global _SHARED
        with _LOCK:
            if _SHARED is None:
                _check_multiprocess_dir()
                try:
                    _SHARED = Metrics()
                except ImportError as exc:
                    raise ConfigError(
                        f"metrics are asked for but {exc.name} is not installed",
                        hint="pip install 'autonomic[observability]'",
                    ) from None
                except OSError as exc:  # the directory went away or filled up meanwhile
                    raise ConfigError(
                        f"cannot write metrics into PROMETHEUS_MULTIPROC_DIR: {exc.strerror}",
                        hint="point PROMETHEUS_MULTIPROC_DIR at a writable directory, or unset it",
                    ) from None
            return _SHARED


def _check_multiprocess_dir() -> None:
    """``PROMETHEUS_MULTIPROC_DIR`` names a directory this process can write its files into;
    otherwise the first metric would fail with a bare ``FileNotFoundError`` deep in
    ``prometheus_client``."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not folder:
        return
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(
            f"PROMETHEUS_MULTIPROC_DIR={folder} is not a directory this process can write",
            hint=f"create it (mkdir -p {folder}) and give every worker the same one, or unset it",
        )


def current_metrics() -> Metrics | None:
    """The process's metrics if something turned them on (no import otherwise)."""
    return _SHARED


def enabled_by_environment() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def exposition() -> tuple[bytes, str]:
    """The text a scrape gets: this process's registry, or the sum over the processes that
    share ``PROMETHEUS_MULTIPROC_DIR``."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

    registry: Any = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry), CONTENT_TYPE_LATEST


def serve(port: int, host: str = "127.0.0.1") -> Any:
    """Serve ``/metrics`` on ``host:port`` from a daemon thread; returns the server (``port``
    0 picks a free one: ``server.server_port``)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    Metrics.get()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404, "only /metrics is served here")
                return
            body, content_type = exposition()
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return  # scrapes are not worth a log line each

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
