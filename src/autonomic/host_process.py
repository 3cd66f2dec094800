"""A process on this host, named so that another process can tell it is dead for certain.

A worker killed with ``SIGKILL`` cannot clean up: the cgroups it made ahead for its sandboxes
and an egress execution's network namespaces stay on the host, and the runs it leased stay
leased until the lease expires. What it left carries its identity (``tag``:
``PID-PIDNS-START-SERIAL``; a lease holder's id, ``host:pid:nonce:PIDNS-START``), and a later
worker cleans up, or takes the run over at once, when that process is dead for certain
(``proven_dead``). A pid alone proves nothing: it is reused, and a process in another pid
namespace (another container sharing the cgroup hierarchy, ``/run/netns`` or the host name) has
a pid that means another process here, or none. A pid with its start time names one process for
ever within one pid namespace.
"""

from __future__ import annotations

import os

Maker = tuple[int, int, int]
"""A process: its pid, the inode of its pid namespace, its start time (clock ticks since boot)."""

_IDENTITY: Maker | None = None


def identity() -> Maker:
    """This process's ``Maker`` (computed again after a fork: the pid changes); a namespace or
    start time that cannot be read is 0, and a process with a 0 proves nothing dead."""
    global _IDENTITY
    pid = os.getpid()
    if _IDENTITY is None or _IDENTITY[0] != pid:
        try:
            namespace = os.stat("/proc/self/ns/pid").st_ino
        except OSError:
            namespace = 0
        _IDENTITY = (pid, namespace, start_time(pid) or 0)
    return _IDENTITY


def tag(serial: int) -> str:
    """What names this process's ``serial``-th resource: ``PID-PIDNS-START-SERIAL``."""
    pid, namespace, start = identity()
    return f"{pid}-{namespace}-{start}-{serial}"


def maker_of(text: str, *, suffixes: int = 0) -> Maker | None:
    """The maker a ``tag`` names, followed by exactly ``suffixes`` more ``-`` fields of any
    kind; ``None`` for text of another form (a name from before tags, a probe)."""
    fields = text.split("-")
    if len(fields) != 4 + suffixes or not all(f.isdigit() for f in fields[:4]):
        return None
    return int(fields[0]), int(fields[1]), int(fields[2])


def proven_dead(maker: Maker) -> bool:
    """Whether ``maker`` is dead for certain: in this pid namespace, and its pid gone, now
    another process's (started at another time), or a zombie (exited, not yet reaped). Never
    this process."""
    me = identity()
    if not me[1] or not me[2] or maker == me or maker[1] != me[1]:
        return False
    found = _state_and_start(maker[0])
    return found is None or found[1] != maker[2] or found[0] == b"Z"


def tagged_by_the_dead(text: str, *, suffixes: int = 0) -> bool:
    """Whether ``text`` is a ``tag`` (then ``suffixes`` more ``-`` fields) whose maker is dead
    for certain: what a sweep of leftovers asks of each name."""
    maker = maker_of(text, suffixes=suffixes)
    return maker is not None and proven_dead(maker)


def gone_or_zombie(pid: int) -> bool:
    """Whether no process has ``pid`` or it has exited unreaped: all a bare pid (a name from
    before tags) can say, since the pid may be another process's by now."""
    found = _state_and_start(pid)
    return found is None or found[0] == b"Z"


def start_time(pid: int) -> int | None:
    """Field 22 of ``/proc/PID/stat``: when the process started; ``None`` if there is none."""
    found = _state_and_start(pid)
    return found[1] if found is not None else None


def _state_and_start(pid: int) -> tuple[bytes, int] | None:
    """Fields 3 and 22 of ``/proc/PID/stat``: the process's state and start time."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
        try:
            stat = os.read(fd, 4096)
        finally:
            os.close(fd)
        # the command name (field 2) is in parentheses and may hold spaces or ')': split after
        # the last one
        fields = stat[stat.rindex(b")") + 2 :].split()
        return fields[0], int(fields[19])
    except (OSError, ValueError, IndexError):
        return None
