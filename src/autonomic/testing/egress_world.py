"""A world to aim egress probes at, built in network namespaces the caller owns.

``egress_world()`` creates a namespace that stands in for the operator's uplink: it holds the
test hosts 10.99.0.2, 10.99.1.2 and 169.254.169.254 (addresses on its loopback) with a listener
on ports 80 and 8080 of each, plus a listener on the host's 127.0.0.1. Nothing reaches beyond
namespaces created here. ``probe_egress(sandbox, world, allow)`` runs one execution with
``NetworkPolicy.ALLOWLIST`` and says which destinations answered, so every backend is held to
the same verdict: the allow-listed destination answers; the same host on another port, another
private host, the metadata address, the router and the host's loopback do not
(``EgressVerdict.held``).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from autonomic import host_process
from autonomic.ports.sandbox import Ended, Execution, Limits, NetworkPolicy, Sandbox

ALLOWED = "10.99.0.2"
OTHER = "10.99.1.2"
METADATA = "169.254.169.254"
ROUTER = "10.255.255.1"

LISTENER = """
import socket, sys, threading
def greet(c):
    c.sendall(b"hi"); c.settimeout(3)
    try:
        print("accepted", c.recv(64).decode().strip(), flush=True)
    except OSError:
        pass
    c.close()
def serve(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(64)
    while True:
        c, _ = s.accept(); threading.Thread(target=greet, args=(c,), daemon=True).start()
for p in (80, 8080):
    threading.Thread(target=serve, args=(p,), daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"""
PROBE = """
import errno, json, select, socket, sys, time
TIMEOUT = globals().get("TIMEOUT", 1.5)
targets = json.loads(sys.argv[1]) if len(sys.argv) > 1 else TARGETS
out, pending = {}, {}
for host, port in targets:
    s = socket.socket(); s.setblocking(False)
    code = s.connect_ex((host, port))
    if code in (0, errno.EINPROGRESS):
        pending[s] = f"{host}:{port}"
    else:
        out[f"{host}:{port}"] = "ConnectionRefusedError" if code == errno.ECONNREFUSED else "OSError"
        s.close()
end = time.monotonic() + TIMEOUT
while pending and time.monotonic() < end:
    _, ready, _ = select.select([], list(pending), [], max(0.0, end - time.monotonic()))
    for s in ready:
        key = pending.pop(s)
        code = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code == 0:
            s.setblocking(True); s.settimeout(TIMEOUT)
            try:
                out[key] = s.recv(2).decode()
            except OSError as exc:
                out[key] = type(exc).__name__
        else:
            out[key] = "ConnectionRefusedError" if code == errno.ECONNREFUSED else "OSError"
        s.close()
for s, key in pending.items():
    out[key] = "TimeoutError"; s.close()
print(json.dumps(out))
"""
"""Connects to every target at once (one thread: gVisor here cannot start threads); prints ``{"host:port": "hi" or the error's name}``."""


@dataclass
class World:
    """The uplink namespace's name, its listener process and the host's loopback port."""

    name: str
    listener: subprocess.Popen[bytes]
    host_port: int

    def targets(self) -> list[tuple[str, int]]:
        """Where a probe knocks: the allow-listed one first, then what must stay shut."""
        return [
            (ALLOWED, 8080),
            (ALLOWED, 80),
            (OTHER, 8080),
            (METADATA, 80),
            (ROUTER, 22),
            ("127.0.0.1", self.host_port),
        ]


_WORLDS = itertools.count()
WORLD_PREFIX = "autonomic-test-world-"
"""Every world's namespace name starts with this, then its maker's ``host_process.tag``."""


def reap_stale_worlds() -> list[str]:
    """Delete the worlds of test processes that were killed before they could (their maker is
    dead for certain: ``host_process.tagged_by_the_dead``); returns their names."""
    from autonomic.adapters.sandbox.egress import NETNS_DIR, delete_namespaces

    try:
        names = os.listdir(NETNS_DIR)
    except OSError:
        return []
    stale = [
        name
        for name in names
        if name.startswith(WORLD_PREFIX)
        and host_process.tagged_by_the_dead(name[len(WORLD_PREFIX) :])
    ]
    delete_namespaces(stale)
    return stale


class WorldUnavailable(Exception):
    """This host cannot build the world (not root, no ``ip``/``nft``, no namespaces)."""


def _ip() -> str:
    return shutil.which("ip") or "/usr/sbin/ip"


def _sh(*argv: str) -> None:
    # argv is built here from constants and the world's own name
    subprocess.run([_ip(), *argv], check=True, capture_output=True, timeout=10)  # noqa: S603


@contextmanager
def egress_world() -> Iterator[World]:
    """Build the world, yield it, remove it (raises ``WorldUnavailable`` saying why not)."""
    missing = [t for t in ("ip", "nft", "nsenter") if shutil.which(t) is None]
    if os.geteuid() != 0 or missing:
        raise WorldUnavailable(
            f"egress needs root and ip/nft/nsenter (missing: {missing or 'root'})"
        )
    reap_stale_worlds()
    name = f"{WORLD_PREFIX}{host_process.tag(next(_WORLDS))}"
    try:
        _sh("netns", "add", name)
    except subprocess.CalledProcessError as exc:
        raise WorldUnavailable(
            f"this host cannot create network namespaces: {exc.stderr.decode().strip()}"
        ) from None
    listener = None
    try:
        _sh("-n", name, "link", "set", "lo", "up")
        for address in (ALLOWED, OTHER, METADATA):
            _sh("-n", name, "addr", "add", f"{address}/32", "dev", "lo")
        listener = subprocess.Popen(  # noqa: S603 -- constants and our own namespace's name
            [_ip(), "netns", "exec", name, sys.executable, "-c", LISTENER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert listener.stdout is not None
        if listener.stdout.readline() != b"ready\n":
            raise WorldUnavailable("the test listener did not start")
        host = socket.socket()
        host.bind(("127.0.0.1", 0))
        host.listen(8)
        stop = threading.Event()

        def serve_host() -> None:
            while True:
                conn, _ = host.accept()
                if stop.is_set():
                    conn.close()
                    return
                conn.sendall(b"hi")
                conn.close()

        server = threading.Thread(target=serve_host, daemon=True)
        server.start()
        try:
            yield World(name, listener, host.getsockname()[1])
        finally:
            stop.set()
            socket.create_connection(host.getsockname(), timeout=5).close()  # wakes accept()
            server.join(timeout=10)
            host.close()
    finally:
        if listener is not None:
            listener.kill()
            listener.communicate()
        subprocess.run([_ip(), "netns", "del", name], check=False, timeout=10)  # noqa: S603


def leftovers(world: World) -> list[str]:
    """This process's egress namespaces and uplink veths still present (must be none)."""
    from autonomic.adapters.sandbox.egress import NAME_PREFIX, NETNS_DIR, UPLINK_PREFIX

    ours = f"{NAME_PREFIX}{os.getpid()}-"
    found = [n for n in os.listdir(NETNS_DIR) if n.startswith(ours)]
    links = subprocess.run(  # noqa: S603 -- our own namespace's name
        [_ip(), "-n", world.name, "-o", "link"], capture_output=True, text=True, check=True
    ).stdout
    found += [line for line in links.splitlines() if f" {UPLINK_PREFIX}" in line]
    return found


def probe_code(world: World, timeout: float = 1.5) -> str:
    """The probe as sandbox code, aimed at ``world``'s targets."""
    return f"TARGETS = {world.targets()!r}\nTIMEOUT = {timeout!r}\n{PROBE}"


@dataclass(frozen=True)
class EgressVerdict:
    """What one allow-listed execution reached."""

    answers: dict[str, str]
    allowed: str

    @property
    def held(self) -> bool:
        """The allowed destination answered and nothing else did."""
        others = [v for k, v in self.answers.items() if k != self.allowed]
        return self.answers.get(self.allowed) == "hi" and "hi" not in others

    @property
    def leaked(self) -> list[str]:
        """Destinations that answered though they were not allowed."""
        return [k for k, v in self.answers.items() if k != self.allowed and v == "hi"]


async def probe_egress(
    sandbox: Sandbox, world: World, *, wall_seconds: float = 20.0, connect_s: float = 1.5
) -> EgressVerdict:
    """Run the probe in ``sandbox`` with ``ALLOWED:8080`` allow-listed (and nothing else)."""
    allowed = f"{ALLOWED}:8080"
    limits = Limits(
        wall_seconds=wall_seconds,
        cpu_seconds=wall_seconds,
        network=NetworkPolicy.ALLOWLIST,
        egress_allow=(allowed,),
    )
    result = await sandbox.execute(Execution(code=probe_code(world, connect_s), limits=limits))
    if result.ended is not Ended.EXIT or result.exit_code != 0:
        raise AssertionError(
            f"the egress probe did not finish: {result.ended} {result.detail} {result.stderr}"
        )
    answers: dict[str, str] = json.loads(result.stdout)
    return EgressVerdict(answers, allowed)
