"""Build the microVM's kernel, initramfs and read-only root image from Debian packages.

Run it as ``python -m autonomic.adapters.sandbox.image`` (or ``scripts/build-microvm-image``). Nothing is
mounted and nothing needs a loop device: the packages are fetched with ``apt-get download``,
unpacked with ``dpkg-deb -x``, the root image is written by ``mkfs.ext4 -d`` and the initramfs is a
``newc`` cpio written here. The result is cached under
``${XDG_CACHE_HOME:-~/.cache}/autonomic/microvm/<recipe hash>/``, so a machine builds it once per
recipe and every later call is a directory lookup.

What goes where, and why:

* ``vmlinuz``: Debian's stock kernel (``linux-image-amd64``), unmodified. Its virtio and ext4
  drivers are modules, hence the initramfs.
* ``initrd.img``: static busybox, the kernel modules for virtio-mmio, virtio-blk and ext4 (with
  their dependencies, resolved from each module's ``.modinfo``), and ``/init``, which loads them,
  mounts the read-only root drive and switches to it.
* ``rootfs.ext4``: Python 3.11 (minimal + stdlib and the libraries its C modules need), static
  busybox for the guest's plumbing, and ``/sbin/autonomic-init``, the guest side of the protocol
  described in ``autonomic.adapters.sandbox.microvm``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from autonomic.errors import ConfigError

PACKAGES: tuple[str, ...] = (
    "busybox-static",
    "libc6",
    "libgcc-s1",
    "python3.11-minimal",
    "libpython3.11-minimal",
    "libpython3.11-stdlib",
    "media-types",
    "libexpat1",
    "zlib1g",
    "libssl3",
    "libbz2-1.0",
    "libcrypt1",
    "libffi8",
    "liblzma5",
    "libsqlite3-0",
    "libuuid1",
)
"""Besides the kernel: Python and what its standard library links against."""

MODULES: tuple[str, ...] = ("virtio_mmio", "virtio_blk", "virtio_net", "crc32c_generic", "ext4")
"""Loaded by the initramfs, dependencies first."""

INITRAMFS_INIT = """#!/bin/busybox sh
# autonomic microVM initramfs: load the block drivers, mount the read-only root, switch to it.
/bin/busybox mkdir -p /proc /sys /dev /newroot
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
for m in $(/bin/busybox cat /modules/order); do
    /bin/busybox insmod /modules/$m.ko || echo "autonomic-init: insmod $m failed" >/dev/ttyS0
done
root=""; ws=""
for d in /sys/block/vd*; do
    n=${d##*/}
    if [ "$(/bin/busybox cat $d/ro)" = 1 ]; then root=$n; else ws=$n; fi
done
/bin/busybox mount -t ext4 -o ro,nosuid,nodev,noload /dev/$root /newroot || {
    echo "AUTONOMIC-FATAL no root drive"; /bin/busybox reboot -f; }
/bin/busybox mount --move /dev /newroot/dev
/bin/busybox umount /proc /sys
exec /bin/busybox switch_root /newroot /sbin/autonomic-init /dev/$ws
"""

GUEST_INIT = r"""#!/bin/busybox sh
# autonomic microVM PID 1: mount, make the sandbox cgroup, then hand over to the pre-warmed runner
# (which says READY - the snapshot is taken there - and runs one execution); then reboot, which
# ends QEMU.
bb=/bin/busybox
export PATH=/usr/bin:/bin:/usr/sbin:/sbin LANG=C.UTF-8
$bb mount -t proc -o nosuid,nodev,noexec proc /proc
$bb mount -t sysfs -o nosuid,nodev,noexec,ro sysfs /sys
$bb mount -t tmpfs -o mode=0755,size=72m,nosuid,nodev tmpfs /run
$bb mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 /sys/fs/cgroup
echo "+memory +pids" > /sys/fs/cgroup/cgroup.subtree_control
$bb mkdir /sys/fs/cgroup/sandbox
echo 0 > /sys/fs/cgroup/sandbox/memory.swap.max 2>/dev/null
/usr/bin/python3 /sbin/autonomic-runner "$1" </dev/null >/dev/ttyS0 2>&1
$bb sync
exec $bb reboot -f
"""

GUEST_RUNNER = (Path(__file__).parent / "guest_runner.py").read_text()
"""The guest's pre-warmed runner (``/sbin/autonomic-runner``); see ``guest_runner``."""


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the image's content; its hash names the cache directory."""

    kernel_package: str = "linux-image-amd64"
    packages: tuple[str, ...] = PACKAGES
    modules: tuple[str, ...] = MODULES
    initramfs_init: str = INITRAMFS_INIT
    guest_init: str = GUEST_INIT
    guest_runner: str = GUEST_RUNNER

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Image:
    """The built artefacts of one recipe."""

    directory: Path

    @property
    def kernel(self) -> Path:
        return self.directory / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.directory / "initrd.img"

    @property
    def rootfs(self) -> Path:
        return self.directory / "rootfs.ext4"

    def complete(self) -> bool:
        return all(p.is_file() for p in (self.kernel, self.initrd, self.rootfs))


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "autonomic" / "microvm"


def image_for(recipe: Recipe | None = None) -> Image:
    """Where the image of ``recipe`` lives (built or not)."""
    return Image(cache_root() / (recipe or Recipe()).digest())


def _run(argv: list[str], cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(  # noqa: S603 - fixed tools, arguments built here
            argv, cwd=cwd, capture_output=True, text=True, check=False
        )
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{argv[0]} is not installed", hint="the image build needs apt-get, dpkg-deb, mkfs.ext4"
        ) from exc
    if done.returncode != 0:
        raise ConfigError(
            f"{' '.join(argv[:3])} failed: {done.stderr.strip()[-400:]}",
            hint="check that apt sources are reachable (apt-get update) and the disk has room",
        )
    return done.stdout


def _kernel_package(meta: str) -> str:
    """``linux-image-amd64`` is a metapackage: the versioned package it depends on."""
    out = _run(["apt-cache", "depends", meta])
    found = re.findall(r"Depends: (linux-image-[0-9][^\s]*)", out)
    if not found:
        raise ConfigError(f"cannot resolve {meta} to a kernel package", hint="run apt-get update")
    return str(found[0])


def _module_closure(moddir: Path, wanted: tuple[str, ...]) -> list[Path]:
    """The ``.ko`` files for ``wanted`` and their dependencies, dependencies first."""
    index = {p.name.split(".ko")[0].replace("-", "_"): p for p in moddir.rglob("*.ko*")}
    order: list[Path] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        key = name.replace("-", "_")
        if key in seen:
            return
        seen.add(key)
        path = index.get(key)
        if path is None:
            raise ConfigError(f"kernel module {name} not found", hint="check the kernel package")
        match = re.search(rb"\0depends=([^\0]*)\0", b"\0" + path.read_bytes())
        for dep in match.group(1).decode().split(",") if match else []:
            if dep:
                visit(dep)
        order.append(path)

    for name in wanted:
        visit(name)
    return order


def _cpio_newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A ``newc`` cpio archive of ``(path, mode, data)``; symlinks carry their target as data."""
    out = bytearray()
    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        encoded = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0]
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        out += header + encoded
        out += b"\0" * (-len(out) % 4)
        out += data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def _initramfs(busybox: Path, modules: list[Path], init: str) -> bytes:
    entries: list[tuple[str, int, bytes]] = [
        ("bin", stat.S_IFDIR | 0o755, b""),
        ("modules", stat.S_IFDIR | 0o755, b""),
        ("bin/busybox", stat.S_IFREG | 0o755, busybox.read_bytes()),
        ("init", stat.S_IFREG | 0o755, init.encode()),
    ]
    names = []
    for path in modules:
        name = path.name.split(".ko")[0]
        names.append(name)
        entries.append((f"modules/{name}.ko", stat.S_IFREG | 0o644, path.read_bytes()))
    entries.append(("modules/order", stat.S_IFREG | 0o644, "\n".join(names).encode() + b"\n"))
    return gzip.compress(_cpio_newc(entries), compresslevel=6, mtime=0)


def _populate_rootfs(root: Path, recipe: Recipe) -> None:
    for name in ("proc", "sys", "dev", "run", "tmp", "workspace", "etc"):
        (root / name).mkdir(exist_ok=True)
    (root / "tmp").chmod(0o755)  # read-only root: /tmp is not a place to write
    (root / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/:/\n")
    (root / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    sbin = root / "sbin"
    if not sbin.exists():
        sbin.mkdir()
    init = sbin / "autonomic-init"
    init.write_text(recipe.guest_init)
    init.chmod(0o755)
    (sbin / "autonomic-runner").write_text(recipe.guest_runner)
    busybox = root / "bin" / "busybox"
    applets = _run([str(busybox), "--list"]).split()
    for applet in applets:
        link = root / "bin" / applet
        if not link.exists() and not link.is_symlink() and not (root / "usr/bin" / applet).exists():
            link.symlink_to("busybox")
    python = root / "usr" / "bin" / "python3"
    if not python.exists():
        python.symlink_to("python3.11")


def build(recipe: Recipe | None = None, *, force: bool = False) -> Image:
    """Build (or find in the cache) the image of ``recipe``; returns where it is."""
    recipe = recipe or Recipe()
    image = image_for(recipe)
    if image.complete() and not force:
        return image
    for tool in ("apt-get", "apt-cache", "dpkg-deb", "mkfs.ext4"):
        if shutil.which(tool) is None and shutil.which(tool, path="/usr/sbin:/sbin") is None:
            raise ConfigError(f"{tool} is not installed", hint="build the image on Debian/Ubuntu")
    image.directory.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=image.directory.parent, prefix=".build-") as tmp:
        work = Path(tmp)
        debs, kernel_tree, root, out = (work / n for n in ("debs", "kernel", "root", "out"))
        for d in (debs, kernel_tree, root, out):
            d.mkdir()
        kernel_pkg = _kernel_package(recipe.kernel_package)
        _run(["apt-get", "download", "-q", kernel_pkg, *recipe.packages], cwd=debs)
        versions = {}
        for deb in sorted(debs.glob("*.deb")):
            target = kernel_tree if deb.name.startswith("linux-image-") else root
            _run(["dpkg-deb", "-x", str(deb), str(target)])
            versions[deb.name.split("_")[0]] = deb.name.split("_")[1]
        vmlinuz = next((kernel_tree / "boot").glob("vmlinuz-*"))
        shutil.copyfile(vmlinuz, out / "vmlinuz")
        modules = _module_closure(kernel_tree / "lib" / "modules", recipe.modules)
        initrd = _initramfs(root / "bin" / "busybox", modules, recipe.initramfs_init)
        (out / "initrd.img").write_bytes(initrd)
        _populate_rootfs(root, recipe)
        used = sum(p.lstat().st_size for p in root.rglob("*"))
        size_mb = used // (1 << 20) + 48
        _run(
            [
                shutil.which("mkfs.ext4") or "/usr/sbin/mkfs.ext4",
                "-q",
                "-F",
                "-O",
                "^has_journal",
                "-L",
                "autonomic-root",
                "-d",
                str(root),
                str(out / "rootfs.ext4"),
                f"{size_mb}M",
            ]
        )
        manifest = {"recipe": recipe.digest(), "kernel": kernel_pkg, "packages": versions}
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
        if image.directory.exists():
            shutil.rmtree(image.directory)
        out.rename(image.directory)
    return image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m autonomic.adapters.sandbox.image",
        description="Build the microVM kernel, initramfs and root image from Debian packages.",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    parser.add_argument("--print-dir", action="store_true", help="only print the cache directory")
    args = parser.parse_args(argv)
    if args.print_dir:
        print(image_for().directory)
        return 0
    try:
        image = build(force=args.force)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(image.directory)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
