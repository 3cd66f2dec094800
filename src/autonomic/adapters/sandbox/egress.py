"""Egress allow-lists for the namespace backend: a network of namespaces built per execution.

Topology (docs/sandbox.md draws it)::

    sandbox netns            router netns                         uplink netns (operator's)
    eth0 10.255.255.2/30 ── in0 10.255.255.1/30
                             up0 100.64.x.y/30 (masquerade) ──── aeg…  100.64.x.y+1/30 ── world

The code runs in the *sandbox* namespace (bubblewrap keeps it with ``--share-net``), whose only
route leads to the *router* namespace. The router forwards, and its nftables table decides what
leaves: the allow-listed destinations first, then an explicit drop of the private, link-local
(cloud metadata), loopback and carrier-grade ranges, then a policy that drops everything else.
The router itself accepts nothing from the sandbox. Nothing here touches the host's root
namespace: no forwarding sysctl, no host nftables rule; the *uplink* is a namespace the operator
names (or a test creates), and the only thing added to it is one end of a veth pair, removed
again after the execution.

Why a router namespace and not rules inside the sandbox namespace: the code could not change
rules it has no capability over either way, but a separate namespace keeps the filter out of
the sandbox's view entirely and gives every execution its own connection-tracking table.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from autonomic import host_process
from autonomic.errors import EgressRuleInvalid, InvalidInput
from autonomic.ports.sandbox import Limits, NetworkPolicy, SandboxUnavailable

NETNS_DIR = Path("/run/netns")
NAME_PREFIX = "autonomic-eg-"
"""Every namespace this module creates starts with this (tests look for leftovers by it)."""
UPLINK_PREFIX = "aeg"
"""Every veth end put into the uplink namespace starts with this."""
ALWAYS_DROPPED = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/3",
)
"""Dropped unless an allow rule comes first: private, carrier-grade (our uplinks), loopback,
link-local (169.254.169.254, the cloud metadata service), multicast and reserved."""
INNER_ROUTER = "10.255.255.1"
INNER_SANDBOX = "10.255.255.2"
UPLINK_NET = ipaddress.IPv4Network("100.64.0.0/10")
_HOST = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
TOOL_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Destination:
    """One allow-listed destination: an IPv4 network (a single host is a /32) and a port."""

    network: ipaddress.IPv4Network
    port: int

    def __str__(self) -> str:
        return f"{self.network}:{self.port}"


def parse_allow(entries: Sequence[str]) -> tuple[Destination, ...]:
    """Validate ``egress_allow`` entries: ``host:port``, ``ipv4:port`` or ``cidr:port``.

    Host names are resolved once, here on the host (the sandbox has no resolver), to every IPv4
    address they have. Raises ``EgressRuleInvalid`` naming the entry and the expected form.
    """
    found: list[Destination] = []
    for entry in entries:
        found.extend(_parse_one(entry))
    return tuple(found)


def _parse_one(entry: object) -> list[Destination]:
    form = "write host:port, 203.0.113.7:443 or 203.0.113.0/24:443"
    if not isinstance(entry, str) or ":" not in entry:
        raise EgressRuleInvalid(f"egress_allow entry {entry!r} has no port", hint=form)
    host, _, port_text = entry.strip().rpartition(":")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise EgressRuleInvalid(
            f"egress_allow entry {entry!r}: port {port_text!r} is not a number from 1 to 65535",
            hint=form,
        )
    port = int(port_text)
    if "/" in host or host.replace(".", "").isdigit():
        try:
            network = ipaddress.IPv4Network(host, strict=True)
        except ValueError as exc:
            raise EgressRuleInvalid(
                f"egress_allow entry {entry!r}: {exc}",
                hint="give an IPv4 address or a network without host bits, e.g. 10.1.0.0/16:443",
            ) from None
        if network.prefixlen == 0:
            raise EgressRuleInvalid(
                f"egress_allow entry {entry!r} allows the whole Internet",
                hint="list the destinations the code needs; use NetworkPolicy.NONE for none",
            )
        return [Destination(network, port)]
    if not _HOST.match(host):
        raise EgressRuleInvalid(
            f"egress_allow entry {entry!r}: {host!r} is not a host name or IPv4 address",
            hint=form + " (IPv6 is not supported: the sandbox has no IPv6 route)",
        )
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)
    except OSError as exc:
        raise EgressRuleInvalid(
            f"egress_allow entry {entry!r}: {host!r} does not resolve ({exc})",
            hint="check the name, or allow its address instead",
        ) from None
    addresses = sorted({str(info[4][0]) for info in infos})
    return [Destination(ipaddress.IPv4Network(f"{a}/32"), port) for a in addresses]


def ruleset(allow: Sequence[Destination]) -> str:
    """The router namespace's nftables table (read it in docs/sandbox.md too)."""
    allows = "\n".join(
        f'        iifname "in0" ip daddr {d.network} meta l4proto {{ tcp, udp }} '
        f"th dport {d.port} accept"
        for d in allow
    )
    dropped = ", ".join(ALWAYS_DROPPED)
    return f"""table inet autonomic_egress {{
    chain input {{
        type filter hook input priority 0; policy drop;
        iifname "lo" accept
    }}
    chain forward {{
        type filter hook forward priority 0; policy drop;
        iifname "up0" oifname "in0" ct state established,related accept
{allows}
        iifname "in0" ip daddr {{ {dropped} }} drop
        iifname "in0" meta nfproto ipv6 drop
    }}
    chain postrouting {{
        type nat hook postrouting priority 100; policy accept;
        oifname "up0" masquerade
    }}
}}
"""


class _Slots:
    """Per-process allocator of uplink /30 networks; the pid spreads processes apart."""

    def __init__(self, per_process: int = 256) -> None:
        self._lock = threading.Lock()
        self._free: list[int] = []
        self._next = itertools.count()
        self._base = (os.getpid() % (UPLINK_NET.num_addresses // 4 // per_process)) * per_process
        self._per_process = per_process

    def take(self) -> int:
        with self._lock:
            if self._free:
                return self._free.pop()
            n = next(self._next)
            if n >= self._per_process:
                raise SandboxUnavailable(
                    f"more than {self._per_process} egress sandboxes in flight in one process",
                    hint="lower the concurrency of sandboxes with NetworkPolicy.ALLOWLIST",
                )
            return self._base + n

    def give(self, slot: int) -> None:
        with self._lock:
            self._free.append(slot)


_SLOTS = _Slots()
_IDS = itertools.count()


def egress_plan(limits: Limits, uplink: str | None) -> tuple[Destination, ...] | None:
    """What every backend checks before it starts anything: ``None`` for no network, else the
    parsed allow-list (raising ``InvalidInput``/``EgressRuleInvalid``/``SandboxUnavailable``
    with what to fix when the request or this host cannot have it)."""
    if limits.network is NetworkPolicy.NONE:
        if limits.egress_allow:
            raise InvalidInput(
                "egress_allow is set but the network policy is NONE",
                hint="set Limits(network=NetworkPolicy.ALLOWLIST, ...) or drop egress_allow",
            )
        return None
    allow = parse_allow(limits.egress_allow)  # clear errors before anything is started
    check_host(uplink)
    return allow


def check_host(uplink: str | None) -> None:
    """Raise ``SandboxUnavailable`` saying why this host cannot build egress networks."""
    if uplink is None:
        raise SandboxUnavailable(
            "NetworkPolicy.ALLOWLIST needs an uplink network namespace and none is configured",
            hint="pass egress_uplink='NAME' to the backend (or set AUTONOMIC_SANDBOX_EGRESS_UPLINK) "
            "naming a namespace under /run/netns (docs/sandbox.md shows how to make one), or use "
            "NetworkPolicy.NONE",
        )
    if os.geteuid() != 0:
        raise SandboxUnavailable(
            "NetworkPolicy.ALLOWLIST needs root (it creates network namespaces)",
            hint="run the worker as root, or use NetworkPolicy.NONE",
        )
    for tool, package in (("ip", "iproute2"), ("nft", "nftables"), ("nsenter", "util-linux")):
        if shutil.which(tool) is None:
            raise SandboxUnavailable(
                f"NetworkPolicy.ALLOWLIST needs `{tool}`, which is not installed",
                hint=f"apt-get install {package}",
            )
    reap_stale()
    if not (NETNS_DIR / uplink).exists():
        raise SandboxUnavailable(
            f"the egress uplink namespace {uplink!r} does not exist",
            hint=f"create it (ip netns add {uplink}, then give it a route out) or fix the name",
        )


_REAPED = threading.Event()


def reap_stale() -> list[str]:
    """Delete the namespaces of processes that died without cleaning up (once per process).

    A worker killed by SIGKILL leaves ``autonomic-eg-<tag>-s/-r`` behind; the tag names its
    maker (``host_process.tag``: pid, pid namespace, start time), so a later worker removes
    them once that maker is dead for certain (``host_process.proven_dead``) - never a live
    worker's in another pid namespace sharing ``/run/netns``. Names from before tags
    (``autonomic-eg-<pid>-<n>-s``) are removed when that pid is gone, as they were. Deleting
    the router namespace also removes its veth in the uplink namespace.
    """
    if _REAPED.is_set() or not NETNS_DIR.is_dir():
        return []
    _REAPED.set()
    stale = []
    for entry in NETNS_DIR.iterdir():
        name = entry.name
        if not name.startswith(NAME_PREFIX):
            continue
        rest = name[len(NAME_PREFIX) :]
        tagged = host_process.maker_of(rest, suffixes=1)
        if tagged is not None:
            if host_process.proven_dead(tagged):
                stale.append(name)
            continue
        pid = rest.split("-", 1)[0]  # a name from before tags
        if pid.isdigit() and int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists():
            stale.append(name)
    delete_namespaces(stale)
    return stale


def delete_namespaces(names: Sequence[str]) -> None:
    """``ip netns del`` each of ``names`` in one ``ip`` process (a name already gone is no
    error)."""
    if names:
        _run(
            ["ip", "-force", "-batch", "-"], "".join(f"netns del {n}\n" for n in names), check=False
        )


class EgressNetwork:
    """The namespaces, links and rules of one execution; ``close`` removes every one of them."""

    TAP = "tap0"
    """The tap device a microVM's NIC uses (``tap=True``), in the sandbox namespace."""

    def __init__(self, uplink: str, allow: Sequence[Destination], *, tap: bool = False) -> None:
        self.uplink = uplink
        self.allow = tuple(allow)
        self.tap = tap
        """For a microVM: the sandbox namespace bridges ``eth0`` with a tap device instead of
        holding the address itself; the guest takes ``INNER_SANDBOX`` (``guest_network``)."""
        ident = host_process.tag(next(_IDS))
        self.sandbox_ns = f"{NAME_PREFIX}{ident}-s"
        self.router_ns = f"{NAME_PREFIX}{ident}-r"
        self._slot = _SLOTS.take()
        self.uplink_link = f"{UPLINK_PREFIX}{self._slot:x}"
        base = int(UPLINK_NET.network_address) + self._slot * 4
        self.router_address = str(ipaddress.IPv4Address(base + 1))
        self.uplink_address = str(ipaddress.IPv4Address(base + 2))
        self._made: list[str] = []
        self._closed = False

    @property
    def guest_network(self) -> str:
        """What a microVM guest sets on its NIC: ``address/len@gateway``."""
        return f"{INNER_SANDBOX}/30@{INNER_ROUTER}"

    @property
    def sandbox_path(self) -> str:
        """What ``nsenter --net=`` takes to put the sandbox's launcher into its namespace."""
        return str(NETNS_DIR / self.sandbox_ns)

    def open(self) -> None:
        """Build it (blocking: run in a thread); on any failure, remove what was made, raise."""
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        # Recorded first: a half-made pair is removed by ``close`` (deleting a missing one is
        # harmless there).
        self._made = [self.sandbox_ns, self.router_ns]
        _run(["ip", "-batch", "-"], f"netns add {self.sandbox_ns}\nnetns add {self.router_ns}")
        r, s = self.router_ns, self.sandbox_ns
        _run(
            ["ip", "-n", r, "-batch", "-"],
            "\n".join(
                [
                    "link set lo up",
                    f"link add in0 type veth peer name eth0 netns {s}",
                    f"link add up0 type veth peer name {self.uplink_link} netns {self.uplink}",
                    f"addr add {INNER_ROUTER}/30 dev in0",
                    f"addr add {self.router_address}/30 dev up0",
                    "link set in0 up",
                    "link set up0 up",
                    f"route add default via {self.uplink_address}",
                ]
            ),
        )
        if self.tap:
            # A microVM: the guest is the sandbox end. Its tap and the veth are bridged, so the
            # router sees the guest's packets on in0 exactly as a namespace sandbox's.
            inner = [
                "link set lo up",
                "link add br0 type bridge",
                "link set eth0 master br0",
                f"tuntap add dev {self.TAP} mode tap",
                f"link set {self.TAP} master br0",
                "link set eth0 up",
                f"link set {self.TAP} up",
                "link set br0 up",
            ]
        else:
            inner = [
                "link set lo up",
                f"addr add {INNER_SANDBOX}/30 dev eth0",
                "link set eth0 up",
                f"route add default via {INNER_ROUTER}",
            ]
        _run(["ip", "-n", s, "-batch", "-"], "\n".join(inner))
        _run(
            ["ip", "-n", self.uplink, "-batch", "-"],
            f"addr add {self.uplink_address}/30 dev {self.uplink_link}\n"
            f"link set {self.uplink_link} up",
        )
        # Rules first, forwarding second: there is no moment the router forwards unfiltered.
        _run(
            [
                "nsenter",
                f"--net={NETNS_DIR / r}",
                "sh",
                "-c",
                "nft -f - && echo 1 > /proc/sys/net/ipv4/ip_forward",
            ],
            ruleset(self.allow),
        )

    def close(self) -> None:
        """Remove the uplink's veth end (synchronously: both ends go) and both namespaces.

        Idempotent; called after the sandbox's processes are gone, also on timeout and cancel.
        """
        if self._closed:
            return
        self._closed = True
        if self._made:
            # The uplink veth is deleted now (both ends go at once) rather than left to the
            # namespace's asynchronous destruction: nothing of ours stays in the uplink namespace.
            _run(["ip", "-n", self.router_ns, "link", "del", "up0"], check=False)
            _run(
                ["ip", "-force", "-batch", "-"],
                "".join(f"netns del {n}\n" for n in self._made),
                check=False,
            )
        errors = [n for n in self._made if (NETNS_DIR / n).exists()]
        self._made = errors
        _SLOTS.give(self._slot)
        if errors:
            raise SandboxUnavailable(
                f"could not delete the network namespaces {errors}",
                hint="ip netns del them by hand; see docs/sandbox.md",
            )


def _run(argv: list[str], stdin: str = "", *, check: bool = True) -> bool:
    done = subprocess.run(  # noqa: S603 -- argv built here from validated values
        argv,
        input=stdin.encode(),
        capture_output=True,
        timeout=TOOL_TIMEOUT,
        check=False,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
    )
    if done.returncode != 0 and check:
        raise SandboxUnavailable(
            f"building the egress network failed: {' '.join(argv[:4])}: "
            f"{done.stderr.decode('utf-8', 'replace').strip()[-300:]}",
            hint="run `autonomic sandbox doctor`; docs/sandbox.md lists what egress needs",
        )
    return done.returncode == 0
