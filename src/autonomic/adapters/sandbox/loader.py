"""The program that runs first inside a sandbox: read the request from stdin, then become the code.

Delivering the request over stdin (not as files on the host) is what makes a warm pool possible:
a pooled sandbox is an interpreter already started inside its namespaces, blocked on ``read(0)``.
It also means the namespace backend writes nothing to the host's disk for an execution.

It runs under ``python3 -I -S`` (no ``site``: a few milliseconds less per start; Debian's
``dist-packages`` is added by hand) and leaves with ``posix._exit`` after running ``atexit``
handlers and flushing, skipping the interpreter's teardown: the sandbox is discarded anyway.
It uses the built-in ``posix`` module, never ``os``: without ``site`` nothing has imported ``os``
yet, and importing it (``stat``, ``posixpath``, ``_collections_abc``'s ABCs) took 1.2 ms of a
1.7 ms loader overhead over a bare ``python3 -I -S`` start (2026-12-06, this 2-core VM, P50 of
40 interleaved starts); code that wants ``os`` imports it itself, as under a bare interpreter.

The loader first imports what it needs, then writes one byte, ``\x06`` (``process.READY``), on
stdout: the host strips it, and a pool waits for it so that a pooled sandbox is really started
*and* has nothing left to load - a pooled execution starts at reading its request.

Wire format (host -> sandbox): 10 ASCII digits giving the header's length, the header (``rlimits``,
``files`` as raw bytes, ``code`` or ``command``), then the program's own stdin. The loader reads
exactly the header, so the rest of fd 0 is left for the program. The header is ``marshal`` format
version 4 (dicts, lists, strings, bytes, ints, ``None`` only: unchanged since Python 3.4, so the
host's interpreter and the sandbox's need not be the same version). Not JSON: ``json`` imports
``re`` and ``enum``, which more than doubled the start of an interpreter without ``site`` (fastest
of 25 starts on a 2-core VM: 17.8 ms bare, 40.1 ms importing ``json`` and ``base64``, 22.1 ms with
``marshal`` and ``resource``); ``marshal`` is built in and already loaded. The header
comes from the host, never from the sandboxed code, so ``marshal`` reading it is not a risk.
"""

from __future__ import annotations

import marshal
from collections.abc import Mapping

WORKSPACE = "/workspace"
LENGTH_DIGITS = 10
MARSHAL_VERSION = 4

LOADER = r"""
import sys, marshal, posix, resource
posix.write(1, b"\x06")
sys.path.append("/usr/lib/python3/dist-packages")
def _boot():
    def readn(n):
        buf = bytearray()
        while len(buf) < n:
            chunk = posix.read(0, n - len(buf))
            if not chunk:
                raise SystemExit(70)
            buf += chunk
        return bytes(buf)
    head = marshal.loads(readn(int(readn(10))))
    if head.get("status_fd") is not None:
        posix.set_inheritable(head["status_fd"], False)
    for name, (soft, hard) in head["rlimits"].items():
        resource.setrlimit(getattr(resource, "RLIMIT_" + name), (soft, hard))
    for rel, data in head["files"].items():
        parts = rel.split("/")
        for i in range(1, len(parts)):
            try:
                posix.mkdir("/workspace/" + "/".join(parts[:i]))
            except FileExistsError:
                pass
        with open("/workspace/" + rel, "wb") as f:
            f.write(data)
    return head
def _execvp(argv):
    name = argv[0]
    if "/" in name:
        paths = [name]
    else:
        dirs = posix.environ.get(b"PATH", b"/usr/bin:/bin").decode("utf-8", "surrogateescape")
        paths = [(d or ".") + "/" + name for d in dirs.split(":")]
    first = None
    for path in paths:
        try:
            posix.execv(path, argv)
        except (FileNotFoundError, NotADirectoryError) as e:
            last = e
        except OSError as e:
            last = e
            first = first or e
    raise first or last
_head = _boot()
del _boot
if _head["command"]:
    try:
        _execvp(_head["command"])
    except OSError as e:
        print("cannot run %s: %s" % (_head["command"][0], e.strerror), file=sys.stderr)
        sys.exit(127)
_src = _head["code"]
_status_fd = _head.get("status_fd")
del _head, _execvp
sys.argv = ["main.py"]
try:
    with open("main.py", "w", encoding="utf-8", errors="surrogateescape") as f:
        f.write(_src)
except OSError:
    pass
_globals = {"__name__": "__main__", "__file__": "/workspace/main.py", "__builtins__": __builtins__}
try:
    exec(compile(_src, "main.py", "exec"), _globals)
except SystemExit:
    raise
except BaseException as e:
    import traceback
    traceback.print_exception(type(e), e, e.__traceback__.tb_next if e.__traceback__ else None)
    _code = 1
else:
    _code = 0
import atexit
atexit._run_exitfuncs()
for _stream in (sys.stdout, sys.stderr):
    try:
        _stream.flush()
    except Exception:
        pass
if _status_fd is not None:
    try:
        posix.write(_status_fd, b"exit %d\n" % _code)
    except OSError:
        pass
posix._exit(_code)
"""


def encode_request(
    *,
    code: str | None,
    command: tuple[str, ...] | None,
    files: Mapping[str, bytes],
    rlimits: Mapping[str, tuple[int, int]],
    stdin: bytes,
    status_fd: int | None = None,
) -> bytes:
    """The bytes a sandbox's loader reads on stdin.

    ``status_fd``: a descriptor the sandbox inherited, where the loader writes ``exit N`` once
    the code has ended by itself (returned or raised; not ``SystemExit``, a signal or an
    ``exec``), after flushing its output (``process.Launcher.run``).
    """
    header = marshal.dumps(
        {
            "code": code,
            "command": list(command) if command else None,
            "files": {k: bytes(v) for k, v in files.items()},
            "rlimits": {k: list(v) for k, v in rlimits.items()},
            "status_fd": status_fd,
        },
        MARSHAL_VERSION,
    )
    return f"{len(header):0{LENGTH_DIGITS}d}".encode("ascii") + header + stdin


def check_files(files: Mapping[str, bytes], workspace_mb: int) -> str | None:
    """Why ``files`` cannot be placed in a workspace (``None`` when they can).

    Paths are relative, normalised and stay inside the workspace; the total fits in it.
    """
    total = 0
    for rel, data in files.items():
        parts = rel.split("/")
        if (
            not rel
            or rel.startswith("/")
            or "\x00" in rel
            or any(p in ("", ".", "..") for p in parts)
        ):
            return f"file path {rel!r} must be relative, without '..', '.' or empty parts"
        total += len(data)
    if total > workspace_mb * 1024 * 1024:
        return (
            f"files total {total / 1048576:.1f} MB, more than the {workspace_mb} MB workspace; "
            "raise Limits.workspace_mb or send less"
        )
    return None
