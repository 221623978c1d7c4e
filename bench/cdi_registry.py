"""Benchmark of the CDI core: load+validate, registry build, resolve, inject. Prints a table.

Run: .venv/bin/python bench/cdi_registry.py [--repeat N]

The targets are the reference Go library 0.8.0's in-process medians measured on the same
kind of machine (see issue 2). The 2,000-device spec is generated here: nvidia-like devices
(two device nodes, a createContainer hook with symlink args), about 1.08 MB, more than the
869 kB file of the Go measurement.

What gets the YAML load there (the indented rows show the steps): libyaml's C parser driven
at the event level, and one recursive-descent reader that builds the attrs model straight from
the events with every strictness check in the same pass (cdi/codec.py); the registry pauses
the garbage collector while it loads. PyYAML's own constructor is shown for comparison, and the
same load on a real generator spec (gpu-cdi generate for the dgx-a100-mig inventory, ~40 kB)
beside its own events-only floor. Wall and CPU medians are both printed: on a busy machine,
wall time includes other processes' turns.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import yaml
from yaml import StreamEndEvent

from cdi.codec import load_spec, parse_spec
from cdi.dump import dump_spec
from cdi.inject import inject_devices
from cdi.registry import Registry
from cdi.spec import ContainerEdits, Device, DeviceNode, Hook, Mount, Spec

HOOK = "/usr/bin/gpu-cdi-hook"


def nvidia_like_spec(devices: int, kind: str = "nvidia.com/gpu", offset: int = 0) -> Spec:
    """A spec shaped like nvidia-ctk's output, with `devices` devices."""
    items = []
    for number in range(offset, offset + devices):
        bus = f"0000:{number % 256:02x}:{number // 256 % 32:02x}.0"
        edits = ContainerEdits(
            device_nodes=[
                DeviceNode(
                    f"/dev/nvidia{number}",
                    type="c",
                    major=195,
                    minor=number % 256,
                    file_mode=0o666,
                    permissions="rwm",
                ),
                DeviceNode(f"/dev/dri/card{number}", type="c", major=226, minor=number % 256),
            ],
            hooks=[
                Hook(
                    "createContainer",
                    HOOK,
                    [
                        "gpu-cdi-hook",
                        "create-symlinks",
                        "--link",
                        f"../card{number}::/dev/dri/by-path/pci-{bus}-card",
                    ],
                ),
            ],
        )
        items.append(Device(str(number), edits))
    common = ContainerEdits(
        env=["NVIDIA_VISIBLE_DEVICES=void"],
        device_nodes=[DeviceNode("/dev/nvidiactl", type="c", major=195, minor=255)],
        hooks=[
            Hook(
                "createContainer",
                HOOK,
                ["gpu-cdi-hook", "update-ldcache", "--folder", "/usr/lib/x86_64-linux-gnu"],
            )
        ],
        mounts=[
            Mount(
                "/usr/bin/nvidia-smi",
                "/usr/bin/nvidia-smi",
                ["ro", "nosuid", "nodev", "rbind", "rprivate"],
            )
        ],
    )
    return Spec("0.7.0", kind, devices=items, container_edits=common)


def containerd_oci_spec() -> dict[str, object]:
    """An OCI spec the size of what containerd's CRI plugin hands to a runtime."""
    caps = [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FSETID",
        "CAP_FOWNER",
        "CAP_MKNOD",
        "CAP_NET_RAW",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETFCAP",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT",
        "CAP_KILL",
        "CAP_AUDIT_WRITE",
    ]
    mounts = [
        {
            "destination": "/proc",
            "type": "proc",
            "source": "proc",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
        },
        {
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"],
        },
        {
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
        },
        {
            "destination": "/etc/hosts",
            "type": "bind",
            "source": "/var/lib/x/hosts",
            "options": ["rbind", "rprivate", "rw"],
        },
        {
            "destination": "/etc/hostname",
            "type": "bind",
            "source": "/var/lib/x/hostname",
            "options": ["rbind", "rprivate", "rw"],
        },
        {
            "destination": "/etc/resolv.conf",
            "type": "bind",
            "source": "/var/lib/x/resolv.conf",
            "options": ["rbind", "rprivate", "rw"],
        },
        {
            "destination": "/dev/shm",
            "type": "bind",
            "source": "/run/x/shm",
            "options": ["rbind", "rprivate", "rw"],
        },
        {
            "destination": "/dev/termination-log",
            "type": "bind",
            "source": "/var/lib/x/log",
            "options": ["rbind", "rprivate", "rw"],
        },
    ]
    return {
        "ociVersion": "1.1.0",
        "process": {
            "user": {"uid": 0, "gid": 0, "additionalGids": [0, 1, 2, 3, 4, 6, 10, 11, 20, 26]},
            "args": ["sleep", "infinity"],
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "HOSTNAME=pod",
                "KUBERNETES_SERVICE_HOST=10.96.0.1",
                "KUBERNETES_SERVICE_PORT=443",
                "NVIDIA_VISIBLE_DEVICES=all",
            ],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "apparmorProfile": "cri-containerd.apparmor.d",
            "oomScoreAdj": 1000,
        },
        "root": {"path": "rootfs"},
        "hostname": "pod",
        "mounts": mounts,
        "annotations": {f"io.kubernetes.cri.{k}": "x" * 20 for k in "abcdefgh"},
        "linux": {
            "resources": {
                "devices": [{"allow": False, "access": "rwm"}],
                "memory": {"limit": 1 << 30},
                "cpu": {"shares": 1024},
            },
            "cgroupsPath": "kubepods-besteffort-pod.slice:cri-containerd:abc",
            "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount", "network")],
            "maskedPaths": [f"/proc/masked{i}" for i in range(14)],
            "readonlyPaths": [f"/proc/ro{i}" for i in range(6)],
            "seccomp": {
                "defaultAction": "SCMP_ACT_ERRNO",
                "architectures": ["SCMP_ARCH_X86_64"],
                "syscalls": [
                    {"names": [f"sys{i}" for i in range(300)], "action": "SCMP_ACT_ALLOW"}
                ],
            },
        },
    }


def median_seconds(run: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median wall-clock and median CPU seconds of `run` over `repeat` runs."""
    walls, cpus = [], []
    for _ in range(repeat):
        gc.collect()
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
    return statistics.median(walls), statistics.median(cpus)


def per_call_seconds(run: Callable[[], object], calls: int, repeat: int) -> tuple[float, float]:
    def batch() -> None:
        for _ in range(calls):
            run()

    wall, cpu = median_seconds(batch, repeat)
    return wall / calls, cpu / calls


def fmt(seconds: float) -> str:
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    if seconds >= 1e-6:
        return f"{seconds * 1e6:.2f} µs"
    return f"{seconds * 1e9:.0f} ns"


def libyaml_events(data: bytes) -> None:
    """The floor: pull every event out of libyaml's C parser and do nothing with it."""
    get = yaml.CBaseLoader(data).get_event
    while type(get()) is not StreamEndEvent:
        pass


def generator_spec() -> bytes:
    """What `gpu-cdi generate` writes for the dgx-a100-mig inventory."""
    from cdi.nvidia import inventory
    from cdi.nvidia.build import Options, build

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    inv = inventory.load(os.path.join(root, "specs/inventories/dgx-a100-mig.yaml"))
    return dump_spec(build(inv, Options()).spec).encode()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15, help="runs per measurement")
    args = parser.parse_args()
    repeat = args.repeat
    rows: list[tuple[str, tuple[float, float], float]] = []
    with tempfile.TemporaryDirectory() as work:
        big = os.path.join(work, "single", "nvidia.yaml")
        os.makedirs(os.path.dirname(big))
        text = dump_spec(nvidia_like_spec(2000))
        with open(big, "w") as stream:
            stream.write(text)
        size = os.path.getsize(big)
        data = text.encode()
        rows.append(
            (
                "  libyaml C parser, events only (floor)",
                median_seconds(lambda: libyaml_events(data), repeat),
                0,
            )
        )
        rows.append(
            (
                "  PyYAML CSafeLoader, parse only",
                median_seconds(lambda: yaml.load(data, Loader=yaml.CSafeLoader), 3),
                0,
            )
        )
        rows.append(
            (
                f"load+validate 2,000-device YAML ({size / 1000:.0f} kB)",
                median_seconds(lambda: load_spec(big), repeat),
                103e-3,
            )
        )
        real = generator_spec()
        rows.append(
            (
                f"  events only, generator spec ({len(real) / 1000:.0f} kB, floor)",
                median_seconds(lambda: libyaml_events(real), repeat * 4),
                0,
            )
        )
        rows.append(
            (
                "load+validate the generator spec",
                median_seconds(lambda: parse_spec(real, "nvidia.yaml"), repeat * 4),
                0,
            )
        )
        json_path = os.path.join(work, "single", "nvidia.json")
        with open(json_path, "w") as stream:
            stream.write(dump_spec(nvidia_like_spec(2000), "json"))
        rows.append(
            (
                "  the same 2,000-device spec as JSON",
                median_seconds(lambda: load_spec(json_path), repeat),
                0,
            )
        )

        many = os.path.join(work, "many")
        os.makedirs(many)
        for index in range(10):
            spec = nvidia_like_spec(1000, f"nvidia.com/gpu{index}", offset=index * 1000)
            with open(os.path.join(many, f"spec{index}.yaml"), "w") as stream:
                stream.write(dump_spec(spec))
        rows.append(
            (
                "build registry: 10 files, 10,000 devices",
                median_seconds(lambda: Registry([many]), max(3, repeat // 2)),
                536e-3,
            )
        )

        registry = Registry([many])
        assert len(registry.devices()) == 10_000, registry.errors()
        name = "nvidia.com/gpu7=7345"
        assert registry.resolve(name) is not None
        rows.append(
            (
                "resolve one name",
                per_call_seconds(lambda: registry.resolve(name), 100_000, repeat),
                1e-6,
            )
        )

        oci = containerd_oci_spec()
        names = [f"nvidia.com/gpu3={3000 + i}" for i in range(8)]
        inject_devices(oci, names, registry)
        rows.append(
            (
                "inject 8 devices into a containerd OCI spec",
                per_call_seconds(lambda: inject_devices(oci, names, registry), 2000, repeat),
                30e-6,
            )
        )

    width = max(len(row[0]) for row in rows)
    print(f"{'operation':<{width}}  {'wall':>9}  {'CPU':>9}  {'target':>9}  verdict")
    missed = False
    for label, (wall, cpu), target in rows:
        verdict = "-"
        if target:
            verdict = "OK" if wall <= target else "MISSED"
            missed = missed or wall > target
        target_text = fmt(target) if target else "-"
        print(f"{label:<{width}}  {fmt(wall):>9}  {fmt(cpu):>9}  {target_text:>9}  {verdict}")
    print(
        f"medians; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs "
        "(wall > CPU means other processes took turns)"
    )
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
