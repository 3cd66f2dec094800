"""The microVM image recipe: cache keying, and what the built initramfs actually contains."""

import gzip
import os
import subprocess
import sys

import pytest

from autonomic.adapters.sandbox.image import (
    GUEST_RUNNER,
    MODULES,
    Recipe,
    _cpio_newc,
    build,
    cache_root,
    image_for,
)
from autonomic.errors import ConfigError


def _parse_newc(data: bytes) -> dict[str, tuple[int, bytes]]:
    """name -> (mode, content) for a newc cpio archive."""
    entries, pos = {}, 0
    while True:
        assert data[pos : pos + 6] == b"070701"
        fields = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        pos += 110
        name = data[pos : pos + namesize - 1].decode()
        pos += namesize
        pos += -pos % 4
        body = data[pos : pos + size]
        pos += size
        pos += -pos % 4
        if name == "TRAILER!!!":
            return entries
        entries[name] = (mode, body)


def test_the_cache_key_follows_the_recipe(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_root() == tmp_path / "autonomic" / "microvm"
    base = Recipe()
    assert base.digest() == Recipe().digest()
    assert Recipe(guest_runner=GUEST_RUNNER + "\n# changed").digest() != base.digest()
    assert Recipe(packages=(*base.packages, "jq")).digest() != base.digest()
    assert image_for(base).directory == cache_root() / base.digest()
    assert not image_for(base).complete()


def test_cpio_writer_round_trips():
    archive = _cpio_newc(
        [("bin", 0o40755, b""), ("bin/x", 0o100755, b"abc"), ("l", 0o120777, b"x")]
    )
    entries = _parse_newc(archive)
    assert entries == {"bin": (0o40755, b""), "bin/x": (0o100755, b"abc"), "l": (0o120777, b"x")}


def test_built_initramfs_loads_the_block_drivers_dependencies_first():
    try:
        image = build()
    except ConfigError as exc:
        if os.environ.get("CI"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    entries = _parse_newc(gzip.decompress(image.initrd.read_bytes()))
    assert entries["init"][1].startswith(b"#!/bin/busybox sh")
    assert entries["init"][0] & 0o111
    order = entries["modules/order"][1].decode().split()
    for wanted in MODULES:
        assert wanted in order
        assert f"modules/{wanted}.ko" in entries
    assert order.index("virtio") < order.index("virtio_mmio") < order.index("virtio_blk")
    assert order.index("jbd2") < order.index("ext4")
    assert image.kernel.read_bytes()[0x202:0x206] == b"HdrS"  # a bzImage
    manifest = (image.directory / "manifest.json").read_text()
    assert "python3.11-minimal" in manifest
    assert "linux-image-" in manifest
    # the module entry point answers too
    out = subprocess.run(
        [sys.executable, "-m", "autonomic.adapters.sandbox.image", "--print-dir"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == str(image.directory)
