"""Egress allow-lists against test hosts in a network namespace this module creates.

The "world" namespace stands in for the uplink: it holds the test hosts 10.99.0.2, 10.99.1.2 and
169.254.169.254 (addresses on its loopback) and a listener on ports 80 and 8080 of each. The host
itself gets a listener on 127.0.0.1. Nothing here reaches beyond namespaces created by the test.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from autonomic.adapters.sandbox import egress
from autonomic.adapters.sandbox.egress import (
    NAME_PREFIX,
    UPLINK_PREFIX,
    Destination,
    parse_allow,
    ruleset,
)
from autonomic.adapters.sandbox.namespace import UID_BASE, NamespaceSandbox
from autonomic.errors import EgressRuleInvalid, InvalidInput
from autonomic.ports.sandbox import Ended, Execution, Limits, NetworkPolicy, SandboxUnavailable
from autonomic.testing.egress_world import (
    ALLOWED,
    METADATA,
    OTHER,
    PROBE,
    World,
)
from autonomic.testing.sandbox import require_bwrap, sandbox_processes


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=10)


@pytest.fixture
def egress_sandbox(world: World) -> Iterator[NamespaceSandbox]:
    require_bwrap()
    sb = NamespaceSandbox(egress_uplink=world.name)
    yield sb
    asyncio.run(sb.close())


def _targets(world: World) -> list[tuple[str, int]]:
    return world.targets()


def _probe(sb: NamespaceSandbox, world: World, *allow: str) -> dict[str, str]:
    code = f"TARGETS = {_targets(world)!r}\n{PROBE}"
    limits = Limits(wall_seconds=10.0, network=NetworkPolicy.ALLOWLIST, egress_allow=allow)
    result = asyncio.run(sb.execute(Execution(code=code, limits=limits)))
    assert result.ended is Ended.EXIT, (result.detail, result.stderr)
    out: dict[str, str] = json.loads(result.stdout)
    return out


def _leftovers(world: World) -> list[str]:
    # this process's namespaces only (the names carry the creating pid): other test processes
    # on the machine build worlds of their own
    ours = f"{NAME_PREFIX}{os.getpid()}-"
    found = [n for n in os.listdir("/run/netns") if n.startswith(ours)]
    links = subprocess.run(
        ["ip", "-n", world.name, "-o", "link"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found += [line for line in links.splitlines() if f" {UPLINK_PREFIX}" in line]
    found += [f"pid {p}" for p in _our_sandbox_processes()]
    return found


def _our_sandbox_processes() -> list[int]:
    """Sandbox processes of this test process's uid range (other suites may run beside us)."""
    first = UID_BASE + (os.getpid() % 10_000) * 10_000
    found = []
    for pid in sandbox_processes():
        try:
            uid = os.stat(f"/proc/{pid}").st_uid
        except FileNotFoundError:
            continue
        if first <= uid < first + 10_000:
            found.append(pid)
    return found


def _wait_for_accepted(world: World, token: bytes) -> None:
    """Block until the listener reports a connection that sent ``token`` (earlier ones skipped)."""
    assert world.listener.stdout is not None
    while True:
        line = world.listener.stdout.readline()
        assert line, "the test listener exited"
        if line == b"accepted " + token + b"\n":
            return


def _host_state() -> tuple[str, str]:
    """The root namespace's links and nftables ruleset: egress must change neither."""
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    rules = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True, check=True)
    return links.stdout, rules.stdout


def test_only_the_allow_listed_destination_is_reachable(
    egress_sandbox: NamespaceSandbox, world: World
) -> None:
    before = _host_state()
    out = _probe(egress_sandbox, world, f"{ALLOWED}:8080")
    assert out[f"{ALLOWED}:8080"] == "hi"
    for refused in (f"{ALLOWED}:80", f"{OTHER}:8080", f"{METADATA}:80", "10.255.255.1:22"):
        assert out[refused] in ("TimeoutError", "ConnectionRefusedError", "OSError"), refused
    assert out[f"127.0.0.1:{world.host_port}"] == "ConnectionRefusedError"  # its own loopback
    asyncio.run(egress_sandbox.settle())  # the teardown follows the result
    assert _leftovers(world) == []
    assert _host_state() == before

    # The same probe without the sandbox reaches every one of them: the test can fail.
    targets = json.dumps(_targets(world)[:4])
    direct = subprocess.run(
        ["ip", "netns", "exec", world.name, sys.executable, "-c", PROBE, targets],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    )
    assert set(json.loads(direct.stdout).values()) == {"hi"}
    host = json.loads(
        subprocess.run(
            [sys.executable, "-c", PROBE, json.dumps(_targets(world)[-1:])],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout
    )
    assert set(host.values()) == {"hi"}


def test_an_allow_listed_private_network_is_reachable(
    egress_sandbox: NamespaceSandbox, world: World
) -> None:
    out = _probe(egress_sandbox, world, "10.99.1.0/24:8080", f"{METADATA}:80")
    assert out[f"{OTHER}:8080"] == "hi"
    assert out[f"{METADATA}:80"] == "hi"
    assert out[f"{ALLOWED}:8080"] != "hi"
    asyncio.run(egress_sandbox.settle())  # the teardown follows the result
    assert _leftovers(world) == []


def test_none_still_has_no_network(egress_sandbox: NamespaceSandbox, world: World) -> None:
    code = f"TARGETS = {_targets(world)!r}\n{PROBE}"
    result = asyncio.run(egress_sandbox.execute(Execution(code=code)))
    out = json.loads(result.stdout)
    assert "hi" not in out.values(), out


def test_timeout_and_cancel_leave_nothing_behind(
    egress_sandbox: NamespaceSandbox, world: World
) -> None:
    limits = Limits(
        wall_seconds=1.0, network=NetworkPolicy.ALLOWLIST, egress_allow=(f"{ALLOWED}:8080",)
    )
    hang = (
        f"import socket, sys, time\nc = socket.create_connection(('{ALLOWED}', 8080))\n"
        "c.recv(2); c.sendall(sys.stdin.buffer.read()); time.sleep(600)"
    )
    result = asyncio.run(
        egress_sandbox.execute(Execution(code=hang, limits=limits, stdin=b"timeout-run"))
    )
    assert result.ended is Ended.TIMEOUT
    _wait_for_accepted(world, b"timeout-run")  # it was connected when the timeout hit
    asyncio.run(egress_sandbox.settle())  # the teardown follows the result
    assert _leftovers(world) == []

    async def cancel_once_connected() -> None:
        long = Limits(
            wall_seconds=60.0, network=NetworkPolicy.ALLOWLIST, egress_allow=(f"{ALLOWED}:8080",)
        )
        running = Execution(code=hang, limits=long, stdin=b"cancel-run")
        task = asyncio.ensure_future(egress_sandbox.execute(running))
        await asyncio.to_thread(_wait_for_accepted, world, b"cancel-run")
        task.cancel()  # the code is running and connected: cancelled mid-execution
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_once_connected())
    asyncio.run(egress_sandbox.settle())  # the teardown follows the result
    assert _leftovers(world) == []

    async def cancel_during_launch() -> None:
        task = asyncio.ensure_future(egress_sandbox.execute(Execution(code=hang, limits=limits)))
        await asyncio.sleep(0)  # let it start building its network, then cancel
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    # The loop ends right after: the launch must have been reaped by then, not by a callback.
    asyncio.run(cancel_during_launch())
    asyncio.run(egress_sandbox.settle())  # the teardown follows the result
    assert _leftovers(world) == []


def test_a_bad_entry_is_refused_before_anything_is_built(
    egress_sandbox: NamespaceSandbox, world: World
) -> None:
    limits = Limits(network=NetworkPolicy.ALLOWLIST, egress_allow=("10.99.0.2:99999",))
    with pytest.raises(EgressRuleInvalid, match="not a number from 1 to 65535"):
        asyncio.run(egress_sandbox.execute(Execution(code="1", limits=limits)))
    assert _leftovers(world) == []


def test_an_allow_list_without_the_allowlist_policy_is_refused(
    egress_sandbox: NamespaceSandbox,
) -> None:
    limits = Limits(egress_allow=("10.99.0.2:8080",))
    with pytest.raises(InvalidInput, match="network policy is NONE"):
        asyncio.run(egress_sandbox.execute(Execution(code="1", limits=limits)))


def test_a_missing_uplink_namespace_is_refused() -> None:
    require_bwrap()
    if os.geteuid() != 0:
        pytest.skip("egress needs root")
    sb = NamespaceSandbox(egress_uplink="autonomic-no-such-namespace")
    limits = Limits(network=NetworkPolicy.ALLOWLIST, egress_allow=("10.99.0.2:8080",))
    with pytest.raises(SandboxUnavailable, match="does not exist"):
        asyncio.run(sb.execute(Execution(code="1", limits=limits)))


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("10.0.0.1", "has no port"),
        ("10.0.0.1:0", "not a number from 1 to 65535"),
        ("10.0.0.1:http", "not a number from 1 to 65535"),
        ("10.0.0.5/24:80", "has host bits set"),
        ("0.0.0.0/0:443", "the whole Internet"),
        ("bad_host!:80", "not a host name or IPv4 address"),
        ("[::1]:80", "not a host name or IPv4 address"),
        ("300.1.2.3:80", "Octet 300"),
    ],
)
def test_entries_are_validated_with_clear_errors(entry: str, message: str) -> None:
    with pytest.raises(EgressRuleInvalid, match=message) as caught:
        parse_allow([entry])
    assert caught.value.hint


def test_entries_parse_to_networks_and_ports() -> None:
    parsed = parse_allow(["10.99.0.2:8080", "10.99.1.0/24:443", "localhost:80"])
    assert [str(d) for d in parsed] == ["10.99.0.2/32:8080", "10.99.1.0/24:443", "127.0.0.1/32:80"]


def test_allow_rules_come_before_the_private_range_drop() -> None:
    text = ruleset(parse_allow(["10.99.0.2:8080"]))
    allow = text.index("ip daddr 10.99.0.2/32")
    drop = text.index("10.0.0.0/8")
    assert allow < drop
    assert "policy drop" in text.split("chain forward")[1].split("}")[0]
    assert isinstance(parse_allow(["10.99.0.2:8080"])[0], Destination)


def test_namespaces_of_a_dead_worker_are_reaped(world: World) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    name = f"{NAME_PREFIX}{dead.stdout.strip()}-0-r"
    _sh("ip", "netns", "add", name)
    egress._REAPED.clear()
    assert egress.reap_stale() == [name]
    assert not (egress.NETNS_DIR / name).exists()
    assert egress.reap_stale() == []  # once per process


def test_only_namespaces_whose_maker_is_dead_for_certain_are_reaped(world: World) -> None:
    """A tagged name (``host_process.tag``) is reaped when its maker is dead in this pid
    namespace; a live worker's in another pid namespace sharing ``/run/netns`` - whose pid
    means nothing here - is left alone (a pid alone would have called it dead)."""
    from autonomic import host_process

    _, namespace, start = host_process.identity()
    gone = 2**22 + 1  # above pid_max: no process has it
    names = {
        "dead": f"{NAME_PREFIX}{gone}-{namespace}-{start}-0-r",
        "elsewhere": f"{NAME_PREFIX}{gone}-{namespace + 1}-{start}-0-r",
        "mine": f"{NAME_PREFIX}{host_process.tag(990_001)}-r",
    }
    for name in names.values():
        _sh("ip", "netns", "add", name)
    try:
        egress._REAPED.clear()
        reaped = egress.reap_stale()  # (another test's worker may reap the dead one first)
        assert set(reaped) <= {names["dead"]}
        left = {key for key, name in names.items() if (egress.NETNS_DIR / name).exists()}
        assert left == {"elsewhere", "mine"}
    finally:
        for name in names.values():
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


def test_the_test_world_of_a_killed_test_process_is_reaped_by_the_next(world: World) -> None:
    """A test process killed mid-test leaves its world's namespace; the next world made on the
    host deletes it once its maker is dead for certain, and never a live one's elsewhere."""
    from autonomic import host_process
    from autonomic.testing.egress_world import WORLD_PREFIX, reap_stale_worlds

    _, namespace, start = host_process.identity()
    gone = 2**22 + 1  # above pid_max: no process has it
    dead = f"{WORLD_PREFIX}{gone}-{namespace}-{start}-0"
    elsewhere = f"{WORLD_PREFIX}{gone}-{namespace + 1}-{start}-0"
    for name in (dead, elsewhere):
        _sh("ip", "netns", "add", name)
    try:
        assert set(reap_stale_worlds()) <= {dead}  # (another worker may reap it first)
        assert not (egress.NETNS_DIR / dead).exists()
        assert (egress.NETNS_DIR / elsewhere).exists()
        assert (egress.NETNS_DIR / world.name).exists()  # this process's own
    finally:
        for name in (dead, elsewhere):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
