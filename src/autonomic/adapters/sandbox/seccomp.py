"""A seccomp filter, assembled here as raw classic BPF, that refuses the syscalls escapes are made of.

Why raw BPF and not libseccomp: bubblewrap's ``--seccomp FD`` reads an already compiled program,
and the filter we need is a deny list plus three argument checks. Writing those ~80 instructions
here keeps the sandbox free of a native Python binding (``pyseccomp`` needs ``libseccomp.so`` at
run time, ``python3-seccomp`` lives only in Debian's interpreter, not in our virtualenv) and lets a
test read the exact program that runs.

The filter kills the process for a foreign architecture or the x32 ABI (both are ways to reach
syscalls under other numbers), answers ``EPERM`` for the denied calls, ``ENOSYS`` for ``clone3``
(its flags live in memory a filter cannot read, and glibc falls back to ``clone``, whose flags it
can), and refuses ``clone`` with namespace flags, raw and packet sockets, and ``TIOCSTI``.
"""

from __future__ import annotations

import errno
import platform
import struct

from autonomic.ports.sandbox import SandboxUnavailable

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000

# x86_64 syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl).
DENIED: dict[str, int] = {
    "ptrace": 101,
    "syslog": 103,
    "uselib": 134,
    "personality": 135,
    "ustat": 136,
    "sysfs": 139,
    "vhangup": 153,
    "pivot_root": 155,
    "_sysctl": 156,
    "adjtimex": 159,
    "chroot": 161,
    "acct": 163,
    "settimeofday": 164,
    "mount": 165,
    "umount2": 166,
    "swapon": 167,
    "swapoff": 168,
    "reboot": 169,
    "iopl": 172,
    "ioperm": 173,
    "create_module": 174,
    "init_module": 175,
    "delete_module": 176,
    "get_kernel_syms": 177,
    "query_module": 178,
    "quotactl": 179,
    "nfsservctl": 180,
    "lookup_dcookie": 212,
    "clock_settime": 227,
    "kexec_load": 246,
    "add_key": 248,
    "request_key": 249,
    "keyctl": 250,
    "unshare": 272,
    "move_pages": 279,
    "perf_event_open": 298,
    "fanotify_init": 300,
    "name_to_handle_at": 303,
    "open_by_handle_at": 304,
    "clock_adjtime": 305,
    "setns": 308,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "kcmp": 312,
    "finit_module": 313,
    "kexec_file_load": 320,
    "bpf": 321,
    "userfaultfd": 323,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "pidfd_getfd": 438,
    "mount_setattr": 442,
    "quotactl_fd": 443,
}
CLONE = 56
CLONE3 = 435
SOCKET = 41
IOCTL = 16
TIOCSTI = 0x5412
CLONE_NAMESPACES = (
    0x00020000  # CLONE_NEWNS
    | 0x02000000  # CLONE_NEWCGROUP
    | 0x04000000  # CLONE_NEWUTS
    | 0x08000000  # CLONE_NEWIPC
    | 0x10000000  # CLONE_NEWUSER
    | 0x20000000  # CLONE_NEWPID
    | 0x40000000  # CLONE_NEWNET
)
ALLOWED_FAMILIES = (1, 2, 10)  # AF_UNIX, AF_INET, AF_INET6 (the sandbox's netns is empty anyway)
SOCK_TYPE_MASK = 0xF
SOCK_RAW = 3
SOCK_PACKET = 10

RET_KILL_PROCESS = 0x80000000
RET_ALLOW = 0x7FFF0000
RET_ERRNO = 0x00050000

# Classic BPF opcodes.
_LD_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JGE = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_JSET = 0x45  # BPF_JMP | BPF_JSET | BPF_K
_AND = 0x54  # BPF_ALU | BPF_AND | BPF_K
_RET = 0x06  # BPF_RET | BPF_K

# Offsets into struct seccomp_data.
_NR, _ARCH, _ARG0, _ARG1 = 0, 4, 16, 24

_Insn = tuple[int, int | str, int | str, int]


class _Program:
    """A tiny assembler: jumps name labels, resolved to relative offsets at the end."""

    def __init__(self) -> None:
        self.insns: list[_Insn] = []
        self.labels: dict[str, int] = {}

    def label(self, name: str) -> None:
        self.labels[name] = len(self.insns)

    def op(self, code: int, k: int, jt: int | str = 0, jf: int | str = 0) -> None:
        self.insns.append((code, jt, jf, k))

    def assemble(self) -> bytes:
        out = bytearray()
        for i, (code, jt, jf, k) in enumerate(self.insns):
            out += struct.pack("<HBBI", code, self._rel(i, jt), self._rel(i, jf), k)
        return bytes(out)

    def _rel(self, i: int, target: int | str) -> int:
        if isinstance(target, int):
            return target
        offset = self.labels[target] - (i + 1)
        if not 0 <= offset <= 255:
            raise ValueError(f"seccomp jump to {target} out of range ({offset})")
        return offset


def build_filter() -> bytes:
    """The compiled program (``struct sock_filter[]``) for bubblewrap's ``--seccomp``."""
    if platform.machine() not in ("x86_64", "AMD64"):
        raise SandboxUnavailable(
            f"the namespace sandbox's seccomp filter is built for x86_64, not {platform.machine()}",
            hint="run on an x86_64 host or use another backend (autonomic sandbox doctor)",
        )
    p = _Program()
    p.op(_LD_ABS, _ARCH)
    p.op(_JEQ, AUDIT_ARCH_X86_64, 0, "kill")
    p.op(_LD_ABS, _NR)
    p.op(_JGE, X32_SYSCALL_BIT, "kill", 0)
    for nr in DENIED.values():
        p.op(_JEQ, nr, "deny", 0)
    p.op(_JEQ, CLONE3, "enosys", 0)
    p.op(_JEQ, CLONE, "clone", 0)
    p.op(_JEQ, SOCKET, "socket", 0)
    p.op(_JEQ, IOCTL, "ioctl", 0)
    p.op(_RET, RET_ALLOW)
    p.label("clone")
    p.op(_LD_ABS, _ARG0)
    p.op(_JSET, CLONE_NAMESPACES, "deny", "allow")
    p.label("socket")
    p.op(_LD_ABS, _ARG0)
    for i, family in enumerate(ALLOWED_FAMILIES):
        last = i == len(ALLOWED_FAMILIES) - 1
        p.op(_JEQ, family, "socktype", "afnosupport" if last else 0)
    p.label("socktype")
    p.op(_LD_ABS, _ARG1)
    p.op(_AND, SOCK_TYPE_MASK)
    p.op(_JEQ, SOCK_RAW, "deny", 0)
    p.op(_JEQ, SOCK_PACKET, "deny", "allow")
    p.label("ioctl")
    p.op(_LD_ABS, _ARG1)
    p.op(_JEQ, TIOCSTI, "deny", "allow")
    p.label("allow")
    p.op(_RET, RET_ALLOW)
    p.label("deny")
    p.op(_RET, RET_ERRNO | errno.EPERM)
    p.label("enosys")
    p.op(_RET, RET_ERRNO | errno.ENOSYS)
    p.label("afnosupport")
    p.op(_RET, RET_ERRNO | errno.EAFNOSUPPORT)
    p.label("kill")
    p.op(_RET, RET_KILL_PROCESS)
    return p.assemble()
