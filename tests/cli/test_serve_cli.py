"""``autonomic serve`` refuses a bad start in one line, before it listens: the store, an agent,
the policy, the port and the address are checked before the server starts (they were tracebacks
from inside the server's lifespan), and ``--port 0`` says which port it took."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from autonomic.cli.exit_codes import ExitCode

CLI = [sys.executable, "-m", "autonomic.cli"]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "AUTONOMIC_DB"} | {"COLUMNS": "200"}


@pytest.mark.parametrize(
    ("args", "code", "first_line"),
    [
        (("--db", "postgresql://nobody@127.0.0.1:1/x", "serve"), ExitCode.ERROR,
         "error: cannot reach PostgreSQL at 127.0.0.1:1/x"),
        (("serve", "--agent", "no_such_module_here:agent"), ExitCode.USAGE,
         "error: cannot import 'no_such_module_here'"),
        (("serve", "--authz-policy", "missing.cedar"), ExitCode.USAGE,
         "error: cannot read the authorization policy missing.cedar"),
        (("serve", "--host", "192.0.2.1"), ExitCode.USAGE,
         "error: cannot listen on 192.0.2.1:0: Cannot assign requested address"),
    ],
)  # fmt: skip
def test_a_bad_start_is_one_line(
    tmp_path: Path, args: tuple[str, ...], code: int, first_line: str
) -> None:
    argv = [*CLI, *args] if "--port" in args else [*CLI, *args, "--port", "0"]
    done = subprocess.run(argv, cwd=tmp_path, env=_env(), capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == code, done.stderr
    assert done.stderr.startswith(first_line), done.stderr
    assert "Traceback" not in done.stderr
    assert "API on" not in done.stderr  # refused before it said it listens


def test_a_taken_port_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([*CLI, "serve", "--port", str(port)], cwd=tmp_path, env=_env(),
                              capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == ExitCode.USAGE, done.stderr
    assert done.stderr.startswith(f"error: cannot listen on 127.0.0.1:{port}: Address already in")
    assert "--port" in done.stderr


def test_port_0_serves_on_the_port_it_names(tmp_path: Path) -> None:
    server = subprocess.Popen([*CLI, "serve", "--port", "0"], cwd=tmp_path, env=_env(),
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert server.stderr is not None
        line = server.stderr.readline()  # printed once the service is built and the port bound
        match = re.match(r"autonomic API on http://127\.0\.0\.1:(\d+) ", line)
        assert match, line
        port = int(match.group(1))
        assert port != 0
        # the socket listens before the line is printed: the request waits, it is not refused
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=60).status_code == 200
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=60)
    assert "Traceback" not in stderr, stderr
