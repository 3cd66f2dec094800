"""A microVM described in Firecracker's configuration layout, translated to a QEMU command line.

Firecracker's JSON (``boot-source``, ``drives``, ``machine-config``, ``network-interfaces``) is
the lingua franca of microVM sandboxes, so the backend is configured in it: the same file could
be handed to Firecracker on a host that has it. QEMU's ``-M microvm`` machine is the runner here
because it also works without hardware virtualisation (TCG emulation), which Firecracker does not.

Translation notes, each learned on this project's CI host:

* ``pit=on,pic=on,rtc=on``: without KVM there is no kvmclock, and the stock kernel wedges in early
  timer set-up unless the legacy PIT/PIC exist.
* ``tsc_early_khz``/``lpj``/``no_timer_check``: microvm has no port 0x61, so the kernel cannot
  calibrate the TSC against the PIT; under TCG the guest TSC runs at the host's rate, which we
  pass in. Without these the kernel spins in calibration forever.
* ``reboot=t`` and ``-no-reboot``: microvm has no keyboard controller, so ``reboot=k`` hangs; a
  triple-fault reboot makes QEMU exit, which is how the guest says "done" (as in Firecracker).
* no network device at all unless ``network-interfaces`` is given: then one virtio-net device on
  the tap device it names (``host_dev_name``), which the backend creates inside the execution's
  own network namespace (an egress allow-list; ``egress``) and starts QEMU in. ``vnet_hdr=off``
  so a snapshot taken with the NIC detached (``detached_nics``: a hub port with nothing else on
  it) restores onto a tap.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from autonomic.errors import ConfigError

DEFAULT_BOOT_ARGS = "console=ttyS0 reboot=t panic=-1 pci=off quiet no_timer_check"
NIC_KEYS = frozenset({"iface_id", "host_dev_name", "guest_mac"})
GUEST_MAC = "52:54:00:a7:00:02"
"""One fixed MAC: the virtio-net device's state (MAC included) is part of the snapshot."""


@dataclass(frozen=True)
class BootSource:
    kernel_image_path: str
    boot_args: str = DEFAULT_BOOT_ARGS
    initrd_path: str | None = None


@dataclass(frozen=True)
class Drive:
    drive_id: str
    path_on_host: str
    is_root_device: bool = False
    is_read_only: bool = False


@dataclass(frozen=True)
class MachineConfig:
    vcpu_count: int = 1
    mem_size_mib: int = 256
    smt: bool = False


@dataclass(frozen=True)
class VmConfig:
    """The Firecracker-layout description of one microVM."""

    boot_source: BootSource
    drives: tuple[Drive, ...]
    machine_config: MachineConfig = field(default_factory=MachineConfig)
    network_interfaces: tuple[dict[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The document Firecracker's ``--config-file`` takes (dashed keys, lists)."""
        return {
            "boot-source": {k: v for k, v in asdict(self.boot_source).items() if v is not None},
            "drives": [asdict(d) for d in self.drives],
            "machine-config": asdict(self.machine_config),
            "network-interfaces": list(self.network_interfaces),
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> VmConfig:
        """Parse a Firecracker config; one clear ``ConfigError`` for anything malformed."""
        try:
            boot = BootSource(**doc["boot-source"])
            drives = tuple(Drive(**d) for d in doc.get("drives", []))
            machine = MachineConfig(**doc.get("machine-config", {}))
            nics = tuple(doc.get("network-interfaces", []))
        except (KeyError, TypeError) as exc:
            raise ConfigError(
                f"invalid microVM config: {exc}",
                hint="use Firecracker's layout: boot-source, drives, machine-config",
            ) from exc
        config = cls(boot, drives, machine, nics)
        config.validate()
        return config

    @classmethod
    def load(cls, path: Path) -> VmConfig:
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read microVM config {path}: {exc}") from exc
        return cls.from_json(doc)

    def validate(self) -> None:
        roots = [d for d in self.drives if d.is_root_device]
        if len(roots) != 1 or not roots[0].is_read_only:
            raise ConfigError(
                "a sandbox microVM needs exactly one root drive, read-only",
                hint='set "is_root_device": true and "is_read_only": true on one drive',
            )
        if len(self.network_interfaces) > 1:
            raise ConfigError(
                "a sandbox microVM has at most one network interface",
                hint="list one entry in network-interfaces (or none: no network)",
            )
        for nic in self.network_interfaces:
            if not isinstance(nic, dict) or set(nic) != NIC_KEYS:
                raise ConfigError(
                    f"network-interfaces entry {nic!r} is not iface_id, host_dev_name, guest_mac",
                    hint='e.g. {"iface_id": "eth0", "host_dev_name": "tap0", '
                    f'"guest_mac": "{GUEST_MAC}"}}',
                )
            if not all(isinstance(v, str) and v.replace(":", "").isalnum() for v in nic.values()):
                raise ConfigError(
                    f"network-interfaces entry {nic!r} has a value that is not a plain name",
                    hint="names of letters and digits, a MAC as 52:54:00:..",
                )
        if self.machine_config.vcpu_count < 1 or self.machine_config.mem_size_mib < 64:
            raise ConfigError("machine-config needs at least 1 vCPU and 64 MiB", hint="raise them")


def qemu_argv(
    config: VmConfig,
    *,
    qemu: str,
    accel: str,
    tsc_khz: int | None,
    memory_file: Path | None = None,
    share_memory: bool = True,
    qmp_fd: int | None = None,
    incoming: str | None = None,
    detached_nics: bool = False,
) -> list[str]:
    """The QEMU command line for ``config``.

    ``memory_file`` backs guest RAM with a file (for snapshots): ``share_memory=True`` writes the
    guest's RAM into it, ``False`` maps it copy-on-write so a restored VM never changes it.
    """
    config.validate()
    machine = "microvm,pit=on,pic=on,rtc=on,isa-serial=on"
    mem = config.machine_config.mem_size_mib
    argv = [qemu, "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"]
    argv += ["-accel", accel, "-cpu", "host" if accel == "kvm" else "max"]
    argv += ["-smp", str(config.machine_config.vcpu_count), "-m", f"{mem}M"]
    if memory_file is not None:
        share = "on" if share_memory else "off"
        argv += [
            "-object",
            f"memory-backend-file,id=ram,size={mem}M,mem-path={memory_file},share={share}",
        ]
        machine += ",memory-backend=ram"
    argv += ["-M", machine]
    boot_args = config.boot_source.boot_args
    if accel != "kvm" and tsc_khz:
        boot_args += f" tsc_early_khz={tsc_khz} lpj={tsc_khz * 2}"
    argv += ["-kernel", config.boot_source.kernel_image_path, "-append", boot_args]
    if config.boot_source.initrd_path:
        argv += ["-initrd", config.boot_source.initrd_path]
    for drive in config.drives:
        ro = ",readonly=on" if drive.is_read_only else ""
        argv += [
            "-drive",
            f"id={drive.drive_id},file={drive.path_on_host},format=raw,if=none{ro}",
            "-device",
            f"virtio-blk-device,drive={drive.drive_id}",
        ]
    for nic in config.network_interfaces:
        ident = nic["iface_id"]
        backend = (
            f"hubport,id={ident},hubid=0"
            if detached_nics
            else f"tap,id={ident},ifname={nic['host_dev_name']},script=no,downscript=no,vnet_hdr=off"
        )
        argv += [
            "-netdev",
            backend,
            "-device",
            f"virtio-net-device,netdev={ident},mac={nic['guest_mac']}",
        ]
    argv += ["-chardev", "stdio,id=serial0,signal=off", "-serial", "chardev:serial0"]
    if qmp_fd is not None:
        argv += [
            "-chardev",
            f"socket,id=qmp,fd={qmp_fd},server=on,wait=off",
            "-mon",
            "chardev=qmp,mode=control",
        ]
    if incoming is not None:
        argv += ["-incoming", incoming]
    return argv
