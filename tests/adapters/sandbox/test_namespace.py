"""The namespace backend against real bubblewrap: results, limits, bad input, leaks, concurrency."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from autonomic.adapters.sandbox.namespace import CGROUPS_AHEAD, UID_BASE, NamespaceSandbox
from autonomic.errors import InvalidInput
from autonomic.ports.sandbox import (
    Ended,
    Execution,
    Limits,
    NetworkPolicy,
    Sandbox,
    SandboxUnavailable,
)
from autonomic.testing.sandbox import require_bwrap, sandbox_processes, temp_entries

FAST = Limits(wall_seconds=5.0, cpu_seconds=3.0)


def run(sandbox: NamespaceSandbox, code: str, **kw: object) -> object:
    return asyncio.run(sandbox.execute(Execution(code=code, limits=kw.pop("limits", FAST), **kw)))  # type: ignore[arg-type]


def test_it_is_a_sandbox(sandbox: NamespaceSandbox) -> None:
    assert isinstance(sandbox, Sandbox)
    assert sandbox.name == "namespace"


def test_runs_code_and_returns_its_output(sandbox: NamespaceSandbox) -> None:
    result = asyncio.run(sandbox.execute(Execution(code="print(sum(range(1000)))")))
    assert result.ok
    assert result.stdout == "499500\n"
    assert result.backend == "namespace"
    assert result.duration_s > 0


def test_files_and_stdin_reach_the_code(sandbox: NamespaceSandbox) -> None:
    code = "import sys; print(open('data/in.csv').read().strip(), sys.stdin.read())"
    result = asyncio.run(
        sandbox.execute(Execution(code=code, files={"data/in.csv": b"a,b"}, stdin=b"piped"))
    )
    assert result.stdout == "a,b piped\n", result.stderr


def test_a_command_runs_instead_of_code(sandbox: NamespaceSandbox) -> None:
    result = asyncio.run(sandbox.execute(Execution(command=("/bin/sh", "-c", "echo $HOME; id -u"))))
    home, uid = result.stdout.split()
    assert home == "/workspace"
    assert uid != "0"


def test_a_command_is_found_on_the_path_and_a_missing_one_exits_127(
    sandbox: NamespaceSandbox,
) -> None:
    """The loader searches ``PATH`` itself (it does without ``os``, see loader.py)."""
    found = asyncio.run(sandbox.execute(Execution(command=("sh", "-c", "echo found"))))
    assert (found.ended, found.exit_code, found.stdout) == (Ended.EXIT, 0, "found\n")
    missing = asyncio.run(sandbox.execute(Execution(command=("no-such-program", "x"))))
    assert (missing.ended, missing.exit_code) == (Ended.EXIT, 127)
    assert missing.stderr == "cannot run no-such-program: No such file or directory\n"
    denied = asyncio.run(
        sandbox.execute(Execution(command=("./data.txt",), files={"data.txt": b"not a program"}))
    )
    assert denied.exit_code == 127
    assert denied.stderr == "cannot run ./data.txt: Permission denied\n"


def test_files_in_nested_directories_are_written(sandbox: NamespaceSandbox) -> None:
    files = {"a/b/c.txt": b"deep", "a/top.txt": b"top", "a/b/d/e.bin": b"\x00\xff"}
    code = "print(open('a/b/c.txt').read(), open('a/top.txt').read(), open('a/b/d/e.bin', 'rb').read())"
    result = asyncio.run(sandbox.execute(Execution(code=code, files=files)))
    assert result.stdout == "deep top b'\\x00\\xff'\n", result.stderr


def test_the_code_sees_a_clean_environment_and_read_only_root(sandbox: NamespaceSandbox) -> None:
    code = """
import os
print(sorted(os.environ))
for path in ("/usr/x", "/x", "/dev/x"):
    try:
        open(path, "w")
        print("WROTE", path)
    except OSError as e:
        print(e.errno)
open("/tmp/ok", "w").write("tmp is the workspace's")
"""
    result = asyncio.run(sandbox.execute(Execution(code=code)))
    assert result.ok, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "['HOME', 'LANG', 'PATH', 'PWD', 'TMPDIR']"
    assert lines[1:] == ["30", "30", "30"]  # EROFS everywhere outside the workspace


def test_a_raising_program_is_an_exit_with_its_traceback(sandbox: NamespaceSandbox) -> None:
    result = asyncio.run(sandbox.execute(Execution(code="x = 1\n1/0\n")))
    assert result.ended is Ended.EXIT
    assert result.exit_code == 1
    assert 'File "main.py", line 2' in result.stderr
    assert "ZeroDivisionError" in result.stderr
    assert "<string>" not in result.stderr  # the loader's own frame is not shown


def test_output_before_an_uncaught_exception_is_kept(sandbox: NamespaceSandbox) -> None:
    """As under a plain interpreter: stdout is flushed and ``atexit`` handlers run."""
    code = (
        "import atexit\natexit.register(print, 'at exit')\nprint('before')\nraise ValueError('x')"
    )
    result = asyncio.run(sandbox.execute(Execution(code=code)))
    assert (result.ended, result.exit_code) == (Ended.EXIT, 1)
    assert result.stdout == "before\nat exit\n"
    assert result.stderr.endswith("ValueError: x\n")


def test_a_syntax_error_is_a_clean_result(sandbox: NamespaceSandbox) -> None:
    result = asyncio.run(sandbox.execute(Execution(code="def (:\n")))
    assert result.ended is Ended.EXIT
    assert result.exit_code == 1
    assert "SyntaxError" in result.stderr


def test_binary_junk_as_code_is_a_clean_result(sandbox: NamespaceSandbox) -> None:
    junk = bytes(range(256)).decode("latin-1") * 4
    result = asyncio.run(sandbox.execute(Execution(code=junk)))
    assert result.ended is Ended.EXIT
    assert result.exit_code == 1
    assert "Error" in result.stderr


def test_non_utf8_output_is_decoded_with_replacement(sandbox: NamespaceSandbox) -> None:
    code = "import sys; sys.stdout.buffer.write(b'ok \\xff\\xfe\\x00 end'); sys.stderr.buffer.write(b'\\xc3')"
    result = asyncio.run(sandbox.execute(Execution(code=code)))
    assert result.ok
    assert result.stdout == "ok \ufffd\ufffd\x00 end"
    assert result.stderr == "\ufffd"


def test_files_larger_than_the_workspace_are_refused_before_running(
    sandbox: NamespaceSandbox,
) -> None:
    files = {"big.bin": b"\0" * (3 * 1024 * 1024)}
    result = asyncio.run(
        sandbox.execute(Execution(code="print(1)", files=files, limits=Limits(workspace_mb=2)))
    )
    assert result.ended is Ended.REFUSED
    assert "more than the 2 MB workspace" in result.detail


@pytest.mark.parametrize("path", ["../escape", "/etc/passwd", "a/../../b", "", "a//b", "x\0y"])
def test_file_paths_must_stay_in_the_workspace(sandbox: NamespaceSandbox, path: str) -> None:
    result = asyncio.run(sandbox.execute(Execution(code="print(1)", files={path: b"x"})))
    assert result.ended is Ended.REFUSED
    assert "must be relative" in result.detail


def test_code_and_command_together_is_invalid(sandbox: NamespaceSandbox) -> None:
    with pytest.raises(InvalidInput, match="exactly one of code or command"):
        asyncio.run(sandbox.execute(Execution(code="1", command=("true",))))


def test_allowlist_without_an_uplink_is_refused_with_a_clear_error(
    sandbox: NamespaceSandbox,
) -> None:
    limits = Limits(network=NetworkPolicy.ALLOWLIST, egress_allow=("203.0.113.7:443",))
    with pytest.raises(SandboxUnavailable, match=r"ALLOWLIST needs an uplink network namespace"):
        asyncio.run(sandbox.execute(Execution(code="1", limits=limits)))


def test_the_wall_timeout_kills_the_whole_tree(sandbox: NamespaceSandbox) -> None:
    code = "import subprocess, time\nsubprocess.Popen(['sleep', '600'])\ntime.sleep(600)"
    empty = asyncio.run(sandbox.execute(Execution(code="pass")))  # this machine's pace, now
    result = asyncio.run(sandbox.execute(Execution(code=code, limits=Limits(wall_seconds=1.0))))
    assert result.ended is Ended.TIMEOUT
    assert result.exit_code is None
    assert 1.0 <= result.duration_s < 3 * (empty.duration_s + 1.0), (result, empty)
    asyncio.run(sandbox.settle())  # each sandbox is torn down after its result is out
    assert sandbox_processes() == []


def test_memory_across_processes_is_bounded(sandbox: NamespaceSandbox) -> None:
    # Four processes of 40 MB each: under any per-process limit, over the 96 MB for the sandbox.
    code = """
import os, time
for _ in range(3):
    if os.fork() == 0:
        break
hog = bytearray(40 << 20)
for i in range(0, len(hog), 4096):
    hog[i] = 1
time.sleep(3)
"""
    result = asyncio.run(
        sandbox.execute(Execution(code=code, limits=Limits(memory_mb=96, wall_seconds=5)))
    )
    if sandbox.cgroups is None:
        pytest.skip("no writable cgroup on this host: memory is bounded per process only")
    assert result.ended is Ended.MEMORY, (result.ended, result.stderr)


def test_cpu_time_is_bounded(sandbox: NamespaceSandbox) -> None:
    result = asyncio.run(
        sandbox.execute(
            Execution(code="while True: pass", limits=Limits(cpu_seconds=1, wall_seconds=10))
        )
    )
    assert result.ended is Ended.CPU
    assert 0.5 <= result.usage.cpu_seconds < 2.5


def test_output_is_cut_at_the_cap_and_flagged(sandbox: NamespaceSandbox) -> None:
    code = "import sys\nprint('e' * 10, file=sys.stderr, end='', flush=True)\nwhile True: sys.stdout.write('x' * 65536)"
    result = asyncio.run(
        sandbox.execute(Execution(code=code, limits=Limits(output_bytes=100_000, wall_seconds=5)))
    )
    assert result.ended is Ended.OUTPUT_LIMIT
    assert len(result.stdout) == 100_000
    assert result.stdout_truncated
    assert not result.stderr_truncated
    assert result.stderr == "e" * 10


def test_output_under_the_cap_is_not_flagged(sandbox: NamespaceSandbox) -> None:
    code = "print('x' * 999)"
    result = asyncio.run(sandbox.execute(Execution(code=code, limits=Limits(output_bytes=1000))))
    assert result.ok
    assert not result.stdout_truncated


def test_the_seccomp_filter_is_what_refuses_keyctl() -> None:
    """keyctl is allowed to unprivileged users: without the filter the same probe succeeds."""
    require_bwrap()
    code = "import ctypes\nprint(ctypes.CDLL(None, use_errno=True).syscall(250, 0, -3, 0))"

    async def both() -> tuple[str, str]:
        guarded, bare = NamespaceSandbox(), NamespaceSandbox(seccomp=False)
        try:
            a = await guarded.execute(Execution(code=code))
            b = await bare.execute(Execution(code=code))
            return a.stdout.strip(), b.stdout.strip()
        finally:
            await guarded.close()
            await bare.close()

    with_filter, without = asyncio.run(both())
    assert with_filter == "-1"
    assert int(without) > 0


def test_each_execution_gets_a_fresh_workspace(sandbox: NamespaceSandbox) -> None:
    code = "import os\nprint(sorted(os.listdir('.')))\nopen('left.txt', 'w').write('x')"
    first = run(sandbox, code)
    second = run(sandbox, code)
    assert first.stdout == second.stdout  # type: ignore[attr-defined]
    assert "left.txt" not in second.stdout  # type: ignore[attr-defined]


def test_fifty_in_flight_complete_or_fail_cleanly_and_leave_nothing() -> None:
    require_bwrap()
    before = temp_entries()
    codes = [
        "print(sum(range(1000)))",
        "import time; time.sleep(0.2); print('slept')",
        "raise SystemExit(3)",
        "def (:",
        "import sys; sys.stdout.buffer.write(b'\\xff' * 10)",
    ]

    async def main() -> tuple[list[object], list[object]]:
        sandbox = NamespaceSandbox(pool_size=2)
        try:
            executions = [
                Execution(code=codes[i % len(codes)], limits=Limits(wall_seconds=30))
                for i in range(50)
            ]
            results = await asyncio.gather(
                *(sandbox.execute(e) for e in executions), return_exceptions=True
            )
        finally:
            await sandbox.close()
        leftovers = sandbox.cgroups.leftovers() if sandbox.cgroups else []
        return list(results), list(leftovers)

    results, cgroups_left = asyncio.run(main())
    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == []
    expected = {0: "499500\n", 1: "slept\n", 4: "\ufffd" * 10}
    for i, result in enumerate(results):
        kind = i % len(codes)
        assert result.ended is Ended.EXIT, (i, result)  # type: ignore[attr-defined]
        if kind in expected:
            assert result.stdout == expected[kind]  # type: ignore[attr-defined]
        if kind == 2:
            assert result.exit_code == 3  # type: ignore[attr-defined]
    assert cgroups_left == []
    assert sandbox_processes() == []
    assert temp_entries() <= before
    mounts = Path("/proc/self/mountinfo").read_text()
    assert "/workspace" not in mounts


def test_a_warm_pool_hands_each_sandbox_out_once() -> None:
    require_bwrap()
    code = "import os\nprint(os.listdir('.'))\nopen('mine', 'w').write('x')"

    async def main() -> list[str]:
        sandbox = NamespaceSandbox(pool_size=2)
        await sandbox.start()
        try:
            return [(await sandbox.execute(Execution(code=code))).stdout for _ in range(5)]
        finally:
            await sandbox.close()

    outputs = asyncio.run(main())
    assert outputs == ["['main.py', '.tmp']\n"] * 5
    assert sandbox_processes() == []


def test_nothing_of_one_pooled_execution_is_visible_to_the_next() -> None:
    """Each pooled sandbox (an interpreter started ahead, its imports done) serves one execution:
    files, the interpreter's modules and builtins, the environment, processes and descriptors
    left by one execution are gone for the next, which gets another sandbox of its own."""
    require_bwrap()
    leave = (
        "import os, sys, builtins, json, subprocess\n"
        "open('/workspace/left', 'w').write('x'); open('/tmp/left', 'w').write('x')\n"
        "builtins.LEFT = 1; json.LEFT = 1; os.environ['LEFT'] = '1'\n"
        "os.pipe(); os.pipe()\n"
        "subprocess.Popen(['sleep', '60'])\n"
        "print(os.getpid(), len(os.listdir('/proc/self/fd')))"
    )
    look = (
        "import os, sys, builtins\n"
        "seen = [os.path.exists('/workspace/left'), os.path.exists('/tmp/left'),\n"
        "        hasattr(builtins, 'LEFT'), 'json' in sys.modules, 'LEFT' in os.environ,\n"
        "        sorted(int(p) for p in os.listdir('/proc') if p.isdigit())]\n"
        "print(seen, len(os.listdir('/proc/self/fd')))"
    )

    async def main() -> list[str]:
        sandbox = NamespaceSandbox(pool_size=1)
        try:
            outputs = []
            for code in (leave, look, look):
                await sandbox.start()  # a pooled sandbox is waiting: the warm path each time
                assert len(sandbox._pool) == 1
                result = await sandbox.execute(Execution(code=code))
                assert result.ok, result
                outputs.append(result.stdout)
            return outputs
        finally:
            await sandbox.close()

    left, first_look, second_look = asyncio.run(main())
    assert left.split()[0] == "1"
    descriptors = first_look.rsplit(" ", 1)[1]
    assert first_look == second_look
    assert first_look == f"[False, False, False, False, False, [1]] {descriptors}"
    assert int(descriptors) < int(left.split()[1])  # the pipes the first one opened are gone
    assert sandbox_processes() == []


def test_close_leaves_no_process_or_cgroup() -> None:
    require_bwrap()

    async def main() -> list[object]:
        sandbox = NamespaceSandbox(pool_size=3)
        await sandbox.start()
        assert len(sandbox_processes()) > 0
        await sandbox.close()
        return list(sandbox.cgroups.leftovers()) if sandbox.cgroups else []

    assert asyncio.run(main()) == []
    assert sandbox_processes() == []


@pytest.mark.parametrize("how", ["thread", "unshare", "setpriv"])
def test_sandbox_processes_run_under_a_uid_of_their_own(how: str) -> None:
    """The spawning thread takes the uid for the spawn; ``unshare --setuid`` drops it where the
    thread cannot; ``setpriv`` (with no_new_privs) for a setuid bwrap."""
    require_bwrap()
    if os.geteuid() != 0:
        pytest.skip("only root switches to a uid of the sandbox's own")

    async def main() -> list[list[tuple[object, ...]]]:
        sandbox = NamespaceSandbox(pool_size=2)
        if how == "thread" and not sandbox._thread_uid:
            pytest.skip("this host's ids or architecture leave it to unshare")
        sandbox._plain_bwrap = how != "setpriv"
        sandbox._thread_uid = how == "thread"
        await sandbox.start()
        try:
            return [
                [_ids_of(pid) for pid in started.cgroup.pids()]  # type: ignore[union-attr]
                for started in sandbox._pool
            ]
        finally:
            await sandbox.close()

    per_sandbox = asyncio.run(main())
    assert len(per_sandbox) == 2
    ids = [set(u) for u in per_sandbox]
    for u in ids:
        assert len(u) == 1
        (one,) = u
        assert isinstance(one[0], int)
        assert one[0] >= UID_BASE
        assert one == (one[0],) * 8 + ("",)  # real, effective, saved, fs uid and gid; no groups
    assert ids[0] != ids[1]


@pytest.mark.parametrize("how", ["thread", "gate"])
def test_every_process_of_a_sandbox_is_born_in_its_cgroup(
    how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing of a sandbox is forked outside its cgroup, however the launcher gets in.

    ``thread`` (cgroup v1): the spawning thread steps into the group, so the launcher is born
    there. ``gate`` (v2, or a host refusing that): the host moves the launcher while bwrap waits
    at its ``--args`` gate, before it clones anything. Either way the processes are in the group
    before any code runs, and the cgroup namespace is rooted at the group: a sandbox cloned
    outside and moved after would see the group's path in ``/proc/self/cgroup`` instead of ``/``.
    """
    require_bwrap()
    from autonomic.adapters.sandbox.cgroup import SandboxCgroup

    if how == "gate":

        @contextlib.contextmanager
        def refuse(self: SandboxCgroup) -> Iterator[bool]:
            yield False

        monkeypatch.setattr(SandboxCgroup, "holding_this_thread", refuse)

    async def main() -> tuple[list[int], list[int], str]:
        sandbox = NamespaceSandbox(pool_size=1)
        await sandbox.start()
        try:
            if sandbox.cgroups is None:
                pytest.skip("no writable cgroup on this host")
            started = sandbox._pool[0]
            assert started.cgroup is not None
            tree = _tree(started.launcher.pid)
            members = started.cgroup.pids()
            result = await sandbox.execute(
                Execution(code="print(open('/proc/self/cgroup').read())")
            )
            assert result.ok, result.stderr
            return tree, members, result.stdout
        finally:
            await sandbox.close()

    tree, members, seen = asyncio.run(main())
    assert len(tree) >= 2  # the launcher (bwrap by now) and the interpreter it started
    assert sorted(tree) == members  # and nothing else: the host's thread has left
    lines = dict(line.split(":", 2)[1:] for line in seen.splitlines() if line)
    if "memory" in lines:  # cgroup v1
        assert lines["memory"] == "/"
        assert lines["pids"] == "/"
    else:
        assert lines[""] == "/"


def test_the_spawning_thread_goes_back_to_its_own_cgroups() -> None:
    require_bwrap()
    own = _thread_cgroups()

    async def main() -> list[str]:
        sandbox = NamespaceSandbox(pool_size=2)
        await sandbox.start()
        try:
            for _ in range(3):
                assert (await sandbox.execute(Execution(code="pass"))).ok
            await sandbox.start()
        finally:
            await sandbox.close()
        return _all_threads_cgroups()  # the executor's threads are still alive here

    assert set(asyncio.run(main())) == {own}


def test_the_spawning_thread_gives_the_uid_back() -> None:
    """The thread that takes a sandbox's uid for a spawn is root again after it, with its groups,
    and the worker stays dumpable; no other thread of the worker ever changed."""
    require_bwrap()
    if os.getresuid() != (0, 0, 0):
        pytest.skip("only a root worker spawns as the sandbox's uid")
    before = _all_threads_ids()
    dumpable = _dumpable()

    async def main() -> dict[int, tuple[str, ...]]:
        sandbox = NamespaceSandbox(pool_size=1)
        if not sandbox._thread_uid:
            pytest.skip("this host's ids or architecture leave it to unshare")
        try:
            await sandbox.start()
            for _ in range(3):
                result = await sandbox.execute(Execution(code="import os; print(os.getuid())"))
                assert int(result.stdout) >= UID_BASE, result
            return _all_threads_ids()
        finally:
            await sandbox.close()

    after = asyncio.run(main())
    assert set(after.values()) == set(before.values()) == {before[os.getpid()]}
    assert any(t.name == "sandbox-spawner" for t in threading.enumerate())  # seen above
    assert _dumpable() == dumpable


def _all_threads_ids() -> dict[int, tuple[str, ...]]:
    """Uid, gid and groups lines of every thread of this process."""
    ids = {}
    for task, text in _threads_files("status"):
        ids[task] = tuple(
            line for line in text.splitlines() if line.startswith(("Uid:", "Gid:", "Groups:"))
        )
    return ids


def _threads_files(name: str) -> list[tuple[int, str]]:
    """The ``/proc`` file ``name`` of every thread of this process that is alive to be read.

    A thread listed may end before its file is opened (the file is gone) or between the open and
    the read (the read fails with ESRCH): it is not one of the threads asked about.
    """
    found = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            file = (task / name).open()
        except FileNotFoundError:
            continue
        with file:
            text = _read_while_alive(file)
        if text is not None:
            found.append((int(task.name), text))
    return found


def _read_while_alive(file: IO[str]) -> str | None:
    """``None`` when the thread or process the ``/proc`` file belongs to ended after the open."""
    try:
        return file.read()
    except ProcessLookupError:
        return None


def test_a_thread_that_ends_after_its_proc_file_is_opened_is_not_read() -> None:
    """The cgroup check failed a CI run reading the file of a thread that had just ended."""
    started, release = threading.Event(), threading.Event()
    thread = threading.Thread(target=lambda: (started.set(), release.wait()))
    thread.start()
    started.wait()
    with Path(f"/proc/self/task/{thread.native_id}/cgroup").open() as file:
        release.set()
        thread.join()
        assert _read_while_alive(file) is None
    assert thread.native_id not in dict(_threads_files("cgroup"))
    assert threading.get_native_id() in dict(_threads_files("cgroup"))


def _dumpable() -> int:
    import ctypes

    return int(ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))  # PR_GET_DUMPABLE


def test_killing_a_group_never_kills_the_host_thread_inside_it() -> None:
    """While a thread of the host is in a sandbox's group (spawning), a kill spares the host."""
    require_bwrap()
    sandbox = NamespaceSandbox()
    if sandbox.cgroups is None or sandbox.cgroups.v2 is not None:
        pytest.skip("only cgroup v1 moves a host thread into a sandbox's group")
    group = sandbox.cgroups.create(f"{os.getpid()}-killtest")
    try:
        with group.holding_this_thread() as inside:
            assert inside
            assert group.pids() == [os.getpid()]
            group.kill_all()
        assert group.pids() == []
    finally:
        assert group.remove()


def test_a_sandbox_that_cannot_join_its_cgroup_never_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    require_bwrap()
    from autonomic.adapters.sandbox.cgroup import SandboxCgroup

    def refuse(self: SandboxCgroup, pid: int) -> None:
        raise PermissionError(13, "Permission denied")

    @contextlib.contextmanager
    def no_thread(self: SandboxCgroup) -> Iterator[bool]:
        yield False

    monkeypatch.setattr(SandboxCgroup, "holding_this_thread", no_thread)
    monkeypatch.setattr(SandboxCgroup, "join", refuse)

    async def main() -> list[object]:
        sandbox = NamespaceSandbox()
        if sandbox.cgroups is None:
            pytest.skip("no writable cgroup on this host")
        try:
            with pytest.raises(SandboxUnavailable, match="cgroup"):
                await sandbox.execute(Execution(code="print('ran')"))
        finally:
            await sandbox.close()
        return list(sandbox.cgroups.leftovers())

    assert asyncio.run(main()) == []
    assert sandbox_processes() == []


def _thread_cgroups() -> str:
    return Path("/proc/thread-self/cgroup").read_text()


def _all_threads_cgroups() -> list[str]:
    return [text for _, text in _threads_files("cgroup")]


def _tree(pid: int) -> list[int]:
    found = [pid]
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        found += _tree(int(child))
    return found


def _ids_of(pid: int) -> tuple[object, ...]:
    """Uid and gid (real, effective, saved, fs) and supplementary groups of ``pid``."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    uids = [int(x) for x in fields["Uid"].split()]
    gids = [int(x) for x in fields["Gid"].split()]
    return (*uids, *gids, fields["Groups"].strip())


FORGE_STATUS = """
import os, stat, fcntl, time
for fd in map(int, os.listdir('/proc/self/fd')):
    try:
        writes_a_pipe = stat.S_ISFIFO(os.fstat(fd).st_mode) and (
            fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY
        )
    except OSError:
        continue
    if fd > 2 and writes_a_pipe:
        os.write(fd, STATUS)
"""
GOES_ON = """
import subprocess, time
subprocess.Popen(['sleep', '600'])
time.sleep(600)
"""


def test_cgroups_made_ahead_serve_one_execution_each_and_close_removes_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    require_bwrap()
    used: list[tuple[Path, ...]] = []
    launch_in = NamespaceSandbox._launch_in

    def spy(self: NamespaceSandbox, *args: object) -> object:
        started = launch_in(self, *args)  # type: ignore[arg-type]
        if started.cgroup is not None:
            used.append(started.cgroup.dirs)
        return started

    monkeypatch.setattr(NamespaceSandbox, "_launch_in", spy)

    async def main() -> tuple[list[tuple[Path, ...]], list[Path]]:
        sandbox = NamespaceSandbox()
        if sandbox.cgroups is None:
            pytest.skip("no writable cgroup on this host")
        try:
            assert sandbox._fresh_cgroups == []  # none before a first execution
            assert (await sandbox.execute(Execution(code="pass"))).ok
            await sandbox.settle()  # then the first ones are made
            made_ahead = [group.dirs for group in sandbox._fresh_cgroups]
            for _ in range(3):
                assert (await sandbox.execute(Execution(code="pass"))).ok
            await sandbox.settle()
            assert len(sandbox._fresh_cgroups) == CGROUPS_AHEAD
        finally:
            await sandbox.close()
        return made_ahead, list(sandbox.cgroups.leftovers())

    made_ahead, left = asyncio.run(main())
    assert len(made_ahead) == CGROUPS_AHEAD
    assert len(used) == len(set(used)) == 4  # never one twice
    assert set(made_ahead) <= set(used)  # executions took the ones made ahead
    assert left == []


def test_the_result_comes_before_the_teardown_and_code_that_goes_on_is_killed() -> None:
    """The loader's status ends an execution (here written by the code itself, which then
    keeps running with a child): the result is returned at once, then the sandbox is killed,
    reaped and its cgroup removed by the reaper."""
    require_bwrap()

    async def main() -> tuple[object, list[object]]:
        sandbox = NamespaceSandbox()
        if sandbox.cgroups is None:
            pytest.skip("the status is used only with a cgroup")
        try:
            # Printed (and flushed) before the status is written: in the pipe first, so in the result.
            code = "print('before', flush=True)\nSTATUS = b'exit 7\\n'\n" + FORGE_STATUS + GOES_ON
            result = await sandbox.execute(
                Execution(code=code, limits=Limits(wall_seconds=60.0, cpu_seconds=30.0))
            )
            await sandbox.settle()
            return result, [*_used_cgroups(sandbox), *sandbox_processes()]
        finally:
            await sandbox.close()

    result, left = asyncio.run(main())
    assert (result.ended, result.exit_code, result.stdout) == (Ended.EXIT, 7, "before\n")  # type: ignore[attr-defined]
    assert left == []


def test_a_status_that_is_not_one_is_ignored() -> None:
    """What the code writes to the status pipe decides nothing unless it is a status: then the
    launcher's exit does, as for ``SystemExit`` (which the loader does not report)."""
    require_bwrap()
    code = "STATUS = b'exit nonsense\\n'\n" + FORGE_STATUS + "raise SystemExit(3)"

    async def main() -> object:
        sandbox = NamespaceSandbox()
        try:
            return await sandbox.execute(Execution(code=code, limits=FAST))
        finally:
            await sandbox.close()

    result = asyncio.run(main())
    assert (result.ended, result.exit_code) == (Ended.EXIT, 3), result  # type: ignore[attr-defined]
    assert sandbox_processes() == []


def test_the_teardown_goes_on_while_the_event_loop_is_busy() -> None:
    """Results are returned before their sandboxes are torn down; the teardown does not need the
    event loop: it finishes while the loop is blocked (here, on nothing but the teardown)."""
    require_bwrap()
    import concurrent.futures

    async def main() -> list[object]:
        sandbox = NamespaceSandbox()
        try:
            results = [await sandbox.execute(Execution(code=f"print({i})")) for i in range(5)]
            assert [r.stdout for r in results] == [f"{i}\n" for i in range(5)]
            # No await from here on: the loop cannot run a callback or a task.
            concurrent.futures.wait(list(sandbox._reaping), timeout=30)
            return [*_used_cgroups(sandbox), *sandbox_processes()]
        finally:
            await sandbox.close()

    assert asyncio.run(main()) == []


def test_an_event_loop_that_ends_right_after_a_result_leaves_nothing() -> None:
    """Each result in an ``asyncio.run`` of its own (its loop and executor threads gone right
    after), then the process exits without ``close()``: nothing of the sandboxes is left, not
    even a zombie. (Launchers forked by an executor thread were killed when it ended, bwrap's
    ``--die-with-parent``, leaving their sandbox's init to a host pid 1 that may never reap it.)
    """
    require_bwrap()
    import subprocess
    import sys

    script = (
        "import asyncio, os\n"
        "from autonomic.adapters.sandbox.namespace import NamespaceSandbox\n"
        "from autonomic.ports.sandbox import Execution\n"
        "from autonomic.testing.sandbox import sandbox_processes\n"
        "sandbox = NamespaceSandbox()\n"
        "results = [asyncio.run(sandbox.execute(Execution(code='print(1)'))) for _ in range(12)]\n"
        "asyncio.run(sandbox.settle())\n"
        "print(os.getpid(), {r.stdout for r in results}, sandbox_processes())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    pid, rest = done.stdout.split(" ", 1)
    assert rest.strip() == "{'1\\n'} []"  # settled: no process left, zombie or not
    from autonomic.adapters.sandbox.cgroup import Cgroups

    cgroups = Cgroups.detect()
    assert (cgroups.leftovers(int(pid)) if cgroups else []) == []
    first = UID_BASE + (int(pid) % 10_000) * 10_000
    assert [p for p in sandbox_processes(everyone=True) if first <= _uid(p) < first + 10_000] == []


def _used_cgroups(sandbox: NamespaceSandbox) -> list[Path]:
    """This process's sandbox cgroups but the ones made ahead and not used yet (empty)."""
    if sandbox.cgroups is None:
        return []
    fresh = {d for group in sandbox._fresh_cgroups for d in group.dirs}
    return [d for d in sandbox.cgroups.leftovers() if d not in fresh]


def _uid(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return -1
    return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])


def test_a_cancelled_execution_leaves_nothing() -> None:
    """A caller giving up (a tool timeout) mid-launch or mid-run still gets everything reaped."""
    require_bwrap()

    async def main() -> list[object]:
        sandbox = NamespaceSandbox()
        try:
            for delay in (0.0, 0.001, 0.3):
                task = asyncio.ensure_future(
                    sandbox.execute(Execution(code="import time; time.sleep(30)"))
                )
                await asyncio.sleep(delay)  # cancel at different points, not synchronisation
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
        finally:
            await sandbox.close()
        await asyncio.sleep(0)  # let a pending launch's done-callback run
        return list(sandbox.cgroups.leftovers()) if sandbox.cgroups else []

    assert asyncio.run(main()) == []
    assert sandbox_processes() == []


def test_without_a_cgroup_rlimits_still_contain_the_abuse() -> None:
    """Hosts with no writable cgroup: per-process address space and per-uid process limits."""
    require_bwrap()
    from autonomic.testing.probe_host import run_probes

    async def main() -> list[object]:
        sandbox = NamespaceSandbox(use_cgroup=False)
        assert sandbox.cgroups is None
        try:
            return list(
                await run_probes(sandbox, names=("memory_bomb", "fork_bomb", "output_flood"))
            )
        finally:
            await sandbox.close()

    outcomes = asyncio.run(main())
    assert [(o.probe, o.held) for o in outcomes] == [  # type: ignore[attr-defined]
        ("fork_bomb", True),
        ("memory_bomb", True),
        ("output_flood", True),
    ], outcomes
    assert sandbox_processes() == []


_KILLED_WORKER = """
import asyncio, sys
from autonomic.adapters.sandbox.namespace import NamespaceSandbox
from autonomic.ports.sandbox import Execution

async def main():
    sandbox = NamespaceSandbox()
    assert (await sandbox.execute(Execution(code="pass"))).ok
    await sandbox.settle()  # the groups for the next executions are made ahead now
    print("ready", flush=True)
    sys.stdin.read()  # until killed

asyncio.run(main())
"""


def test_the_groups_a_killed_worker_made_ahead_are_removed_by_the_next_sandbox() -> None:
    """A worker killed with SIGKILL cannot remove its made-ahead cgroups; the next backend does."""
    import signal
    import subprocess
    import sys

    require_bwrap()
    with subprocess.Popen(
        [sys.executable, "-c", _KILLED_WORKER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as worker:
        try:
            assert worker.stdout is not None
            assert worker.stdout.readline() == "ready\n"
            probe = NamespaceSandbox(use_cgroup=True)
            if probe.cgroups is None:
                pytest.skip("no writable cgroup on this host")
            made = probe.cgroups.leftovers(worker.pid)
            assert len(made) >= CGROUPS_AHEAD  # a live worker's groups are not swept
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            after = NamespaceSandbox(use_cgroup=True)
            assert after.cgroups is not None
            assert after.cgroups.leftovers(worker.pid) == []
            asyncio.run(probe.close())
            asyncio.run(after.close())
        finally:
            worker.kill()


def test_the_sweep_removes_only_the_groups_of_makers_proven_dead() -> None:
    """Same pid namespace and the pid gone or restarted: removed. A live maker, another pid
    namespace, or a name of the older form that says no more than a pid: left alone."""
    from autonomic import host_process
    from autonomic.adapters.sandbox.cgroup import PREFIX

    require_bwrap()
    sandbox = NamespaceSandbox(use_cgroup=True)
    cgroups = sandbox.cgroups
    if cgroups is None:
        pytest.skip("no writable cgroup on this host")
    pid, namespace, start = host_process.identity()
    names = {
        "mine": host_process.tag(900_001),
        "restarted": f"{pid}-{namespace}-{start + 1}-1",  # this pid, another process's start
        "gone": f"{2**22 + 1}-{namespace}-{start}-1",  # above pid_max: no such process
        "elsewhere": f"{2**22 + 1}-{namespace + 1}-{start}-1",  # another pid namespace
        "older": f"{2**22 + 1}-7",
    }
    groups = {key: cgroups.create(name) for key, name in names.items()}
    try:
        removed = cgroups.sweep()  # (another test's sandbox may sweep the dead ones first)
        left = {key for key, group in groups.items() if any(d.exists() for d in group.dirs)}
        assert left == {"mine", "elsewhere", "older"}  # in no hierarchy, or in every one
        assert all(d.exists() for key in left for d in groups[key].dirs)
        assert {p.name for p in removed} <= {PREFIX + names["restarted"], PREFIX + names["gone"]}
    finally:
        for group in groups.values():
            group.remove()
        asyncio.run(sandbox.close())
