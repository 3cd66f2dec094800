"""The real servers of the observability tests: the OTLP trace receiver (Phoenix, started by
``scripts/test``: ``ensure_otlp_receiver``) and Debian's Prometheus and promtool
(``ensure_prometheus``; each test starts its own Prometheus on 127.0.0.1)."""

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CLI = [sys.executable, "-m", "autonomic.cli"]


def _missing(what: str, how: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what} (CI is set, so this is an error; {how})")
    pytest.skip(f"{what}; {how}")


@pytest.fixture(scope="session")
def otlp_url() -> str:
    url = os.environ.get("AUTONOMIC_TEST_OTLP_URL", "http://127.0.0.1:16006")
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=3):
            return url
    except OSError as exc:
        _missing(
            f"no OTLP receiver at {url}: {exc}", "scripts/test starts one (ensure_otlp_receiver)"
        )
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def promtool() -> str:
    found = os.environ.get("AUTONOMIC_TEST_PROMTOOL") or shutil.which("promtool")
    if not found:
        _missing("promtool is not installed", "scripts/test installs it (ensure_prometheus)")
    return str(found)


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    found = os.environ.get("AUTONOMIC_TEST_PROMETHEUS") or shutil.which("prometheus")
    if not found:
        _missing("prometheus is not installed", "scripts/test installs it (ensure_prometheus)")
    return str(found)


def autonomic(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AUTONOMIC_DB"))}
    full |= env or {}
    full["COLUMNS"] = "200"
    return subprocess.run(
        [*CLI, *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=timeout
    )


def get_json(url: str, timeout: float = 10) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def eventually(check: Callable[[], Any], what: str, deadline: float = 60.0) -> Any:
    """Poll ``check`` until it returns something truthy: a server we do not control ingests or
    scrapes on its own schedule. Bounded; the failure says what never happened.

    A 404 is "not yet" too: Phoenix answers 404 for a project until it has ingested the
    project's first span, and it ingests after it has answered the export (a test's project is
    new each run, so its first look can come first)."""
    end = time.monotonic() + deadline
    last: Any = None
    while time.monotonic() < end:
        try:
            last = check()
        except urllib.error.HTTPError as error:
            if error.code != 404:
                raise
            last = None
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"{what} did not happen within {deadline:.0f} s (last: {last!r})")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def promql(base: str, query: str) -> list[dict[str, Any]]:
    """An instant PromQL query over Prometheus's HTTP API; raises on a parse error."""
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    try:
        doc = get_json(url)
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{query!r}: {exc.read().decode()}") from None
    assert doc["status"] == "success", doc
    return list(doc["data"]["result"])


@contextmanager
def running_prometheus(
    prometheus_bin: str, tmp_path: Path, target_port: int, *, rule_files: tuple[Path, ...] = ()
) -> Iterator[str]:
    """A Prometheus on 127.0.0.1 scraping ``target_port`` every second (its log in
    ``tmp_path/prometheus.log``); yields its base URL and stops it on the way out."""
    port = free_port()
    config = tmp_path / "prometheus.yml"
    rules = f"rule_files: [{', '.join(repr(str(r)) for r in rule_files)}]\n" if rule_files else ""
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"{rules}"
        "scrape_configs:\n"
        "  - job_name: autonomic\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{target_port}']}}]\n"
    )
    with (tmp_path / "prometheus.log").open("w") as log:
        prometheus = subprocess.Popen(
            [prometheus_bin, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            prometheus.terminate()
            prometheus.wait(timeout=60)
