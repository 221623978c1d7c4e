"""The built fake host is laid out like the reference DGX-A100 root of the nvidia-ctk specs."""

from __future__ import annotations

import ctypes
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from gpu_cdi_fakehost import layout
from gpu_cdi_fakehost.builder import BuildError, FakeHost, build_host, mig_minor
from gpu_cdi_fakehost.pytest_plugin import FakeHostFactory, require_toolchain

from tests.require import need, need_tool
from tests.test_fakehost.elf import soname

# Listing of the reference root (copied from ../shared/reference/nvidia-ctk-specs): driver root,
# then the host's /proc/driver and /sys, all of which the fake host keeps under one root.
REFERENCE = Path(__file__).parent / "data" / "driver-root-layout.txt"
V = "550.163.01"
_LINE = re.compile(
    r"^(?P<mode>[-a-z]{10}) (?P<owner>\d+:\d+) (?P<path>\S+)"
    r"(?: -> (?P<target>\S+)| \[(?P<dev>\d+,\d+)\]| \((?P<what>.*)\))?$"
)


def reference_entries() -> dict[str, tuple[str, str, str]]:
    """path -> (mode string, uid:gid, detail) from the reference listing."""
    out = {}
    for line in REFERENCE.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        assert m, line
        detail = m["target"] or m["dev"] or ("dir" if m["what"] == "empty dir" else "file")
        out[m["path"]] = (m["mode"], m["owner"], detail)
    return out


def observed_entries(root: Path) -> dict[str, tuple[str, str, str]]:
    """The same view of a built host (leaf entries only, like the listing)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".fakehost"]
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                detail = os.readlink(p)
            elif stat.S_ISCHR(st.st_mode):
                detail = f"{os.major(st.st_rdev)},{os.minor(st.st_rdev)}"
            elif stat.S_ISDIR(st.st_mode):
                if any(p.iterdir()):
                    continue
                detail = "dir"
            else:
                detail = "file"
            out["/" + str(p.relative_to(root))] = (
                stat.filemode(st.st_mode),
                f"{st.st_uid}:{st.st_gid}",
                detail,
            )
    return out


def test_layout_matches_reference(fakehost: FakeHostFactory) -> None:
    """Every entry of the reference root, with its type, mode, owner and link target or device."""
    host = fakehost("dgx-a100-mig", device_nodes=os.geteuid() == 0)
    ref = reference_entries()
    seen = observed_entries(host.root)
    # The reference keeps /proc and /sys of the driver root empty (the host's were bind-mounted
    # over them); here they hold the host files.
    del ref["/proc"], ref["/sys"]
    if os.geteuid() != 0:
        ref = {p: e for p, e in ref.items() if not e[0].startswith("c")}
    assert {p: e for p, e in seen.items() if p in ref} == ref
    # and the NUMA node of each GPU's PCI device, which the toolkit does not read
    numa = {f"/sys/bus/pci/devices/{g.pci.sysfs}/numa_node" for g in host.topology.gpus}
    assert set(seen) - set(ref) == {"/proc/devices"} | numa


def test_sockets_are_sockets(fakehost: FakeHostFactory) -> None:
    host = fakehost("dgx-a100")
    for rel in ("run/nvidia-persistenced/socket", "run/nvidia-fabricmanager/socket"):
        assert stat.S_ISSOCK((host.driver_root / rel).lstat().st_mode), rel


def test_libraries_carry_real_sonames(fakehost: FakeHostFactory) -> None:
    host = fakehost("workstation")
    version = host.driver_version
    expected = {lib.file: lib.soname for lib in layout.libraries(version)}
    assert "libnvidia-sandboxutils.so.570.172.08" in expected  # 560+ branch library
    got = {rel: soname(host.lib_dir / rel) for rel in expected}
    assert got == expected
    # the fake NVML is a distinct, real library, not a stub
    assert soname(host.nvml_library) == "libnvidia-ml.so.1"
    assert host.nvml_library.read_bytes() != (host.lib_dir / f"libcuda.so.{version}").read_bytes()
    # .so.N and .so links resolve to the versioned file
    assert (host.lib_dir / "libcuda.so").resolve() == host.lib_dir / f"libcuda.so.{version}"


def test_sandboxutils_loads_and_declines(fakehost: FakeHostFactory) -> None:
    """Drivers >= 560: NVIDIA's tools find nvSandboxUtilsInit and take their fallback path."""
    host = fakehost("workstation", device_nodes=False)
    lib = ctypes.CDLL(str(host.lib_dir / f"libnvidia-sandboxutils.so.{host.driver_version}"))
    assert lib.nvSandboxUtilsInit(None) == 2  # NVSANDBOXUTILS_ERROR_NOT_SUPPORTED
    for name in ("Shutdown", "GetDriverVersion", "GetGpuResource", "GetFileContent"):
        assert hasattr(lib, f"nvSandboxUtils{name}")


def test_ld_so_cache(fakehost: FakeHostFactory) -> None:
    need(
        os.geteuid() == 0 or shutil.which("unshare") is not None,
        "ldconfig -r chroots: needs root or unshare",
    )
    ldconfig = need_tool("ldconfig") if shutil.which("ldconfig") else "/sbin/ldconfig"
    host = fakehost("dgx-a100")
    cache = host.driver_root / "etc/ld.so.cache"
    assert cache.is_file(), host.notes
    out = subprocess.run(
        [ldconfig, "-p", "-C", str(cache)], capture_output=True, text=True, check=True
    ).stdout
    libdir = "/lib/x86_64-linux-gnu"  # ldconfig reads ld.so.conf's first spelling (merged usr)
    for name in ("libnvidia-ml.so.1", "libcuda.so.1", f"libnvidia-glcore.so.{V}"):
        assert f"{name} (libc6,x86-64) => {libdir}/{name}" in out
    # vdpau/ is not in ld.so.conf (as on the reference host): only the .so link next to it
    assert "libvdpau_nvidia.so.1" not in out


def test_device_nodes(fakehost: FakeHostFactory) -> None:
    need(os.geteuid() == 0, "the fake host's device nodes are made with mknod, which needs root")
    host = fakehost("dgx-a100-mig")
    dev = host.dev_root / "dev"

    def node(rel: str) -> tuple[int, int, int, int]:
        st = (dev / rel).lstat()
        assert stat.S_ISCHR(st.st_mode), rel
        return os.major(st.st_rdev), os.minor(st.st_rdev), stat.S_IMODE(st.st_mode), st.st_gid

    assert node("nvidia7") == (195, 7, 0o666, 0)
    assert node("nvidiactl") == (195, 255, 0o666, 0)
    assert node("nvidia-uvm-tools") == (510, 1, 0o666, 0)
    assert node("dri/card1") == (226, 1, 0o660, 44)
    assert node("dri/renderD135") == (226, 135, 0o660, 105)
    # GPU1, GI2, CI1: the minor the reference spec gives device 1:2
    assert node("nvidia-caps/nvidia-cap158") == (508, mig_minor(1, 2, 1), 0o444, 0)
    assert node("nvidia-caps/nvidia-cap1") == (508, 1, 0o400, 0)
    assert node("nvidia-caps-imex-channels/channel1") == (507, 1, 0o666, 0)
    assert os.readlink(dev / "dri/by-path/pci-0000:bd:00.0-render") == "../renderD135"


def test_host_files(fakehost: FakeHostFactory) -> None:
    host = fakehost("dgx-a100-mig")
    proc = host.proc_sys_root / "proc/driver"
    minors = (proc / "nvidia-caps/mig-minors").read_text()
    assert len(minors) == 25798  # the reference host's file, 8 GPUs
    assert "gpu1/gi2/ci1/access 158\n" in minors
    access = (proc / "nvidia/capabilities/gpu1/mig/gi2/ci1/access").read_text()
    assert access.startswith("DeviceFileMinor: 158\n")
    drm = host.proc_sys_root / "sys/bus/pci/devices/0000:47:00.0/drm"
    assert sorted(p.name for p in drm.iterdir()) == ["card3", "renderD130"]
    info = (proc / "nvidia/gpus/0000:bd:00.0/information").read_text()
    assert "GPU-26fc8dc4-a3ce-5f85-b697-fae6cb71f054" in info


def test_driver_version_override(fakehost: FakeHostFactory) -> None:
    host = fakehost("dgx-a100", driver_version="535.104.05")
    assert host.nvml_library == host.lib_dir / "libnvidia-ml.so.535.104.05"
    assert (host.lib_dir / "libcuda.so.1").resolve().name == "libcuda.so.535.104.05"
    assert (host.driver_root / "usr/lib/firmware/nvidia/535.104.05/gsp_ga10x.bin").is_file()
    assert not list(host.lib_dir.glob(f"*.so.{V}"))
    assert "driver=535.104.05\t" in host.nvml_topology_file.read_text()


def test_driver_container_layout(fakehost: FakeHostFactory) -> None:
    host = fakehost("dgx-a100", layout_name="driver-container", device_nodes=False)
    assert host.driver_root == host.root / "run/nvidia/driver"
    assert host.dev_root == host.proc_sys_root == host.root
    assert (host.driver_root / f"usr/lib/x86_64-linux-gnu/libcuda.so.{V}").is_file()
    assert not (host.root / "usr/lib/x86_64-linux-gnu").exists()
    assert (host.root / "dev/dri/by-path/pci-0000:07:00.0-card").is_symlink()
    assert (host.root / "proc/driver/nvidia-caps/mig-minors").is_file()
    assert host.generate_argv[2:4] == ("--driver-root", str(host.driver_root))


def test_no_device_nodes_leaves_a_note(fakehost: FakeHostFactory) -> None:
    host = fakehost("dgx-a100", device_nodes=False)
    assert not any(stat.S_ISCHR(p.lstat().st_mode) for p in (host.dev_root / "dev").rglob("*"))


def test_failed_rebuild_keeps_the_old_host(
    fakehost: FakeHostFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build that fails half-way leaves the previous host as it was and no debris."""
    host = fakehost("dgx-a100")
    before = (host.root / ".fakehost/host.json").read_text()
    blocker = tmp_path / "elsewhere" / "not-a-dir"
    blocker.parent.mkdir()
    blocker.write_text("")
    monkeypatch.setenv("GPU_CDI_CACHE", str(blocker / "cache"))  # the library cannot be cached
    with pytest.raises(OSError):
        build_host("dgx-a100-mig", host.root, replace=True)
    assert (host.root / ".fakehost/host.json").read_text() == before
    assert sorted(p.name for p in host.root.parent.iterdir()) == ["elsewhere", host.root.name]
    monkeypatch.delenv("GPU_CDI_CACHE")
    again = build_host("dgx-a100-mig", host.root, replace=True)
    assert again.topology.name == "dgx-a100-mig"
    assert json.loads((host.root / ".fakehost/host.json").read_text())["topology"] == "dgx-a100-mig"
    assert sorted(p.name for p in host.root.parent.iterdir()) == ["elsewhere", host.root.name]


def test_refuses_foreign_directory(tmp_path: Path) -> None:
    require_toolchain()
    (tmp_path / "precious").write_text("x")
    with pytest.raises(BuildError, match="not empty and is not a fake host"):
        build_host("dgx-a100", tmp_path)
    assert (tmp_path / "precious").read_text() == "x"


def _cli(*args: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "gpu_cdi_fakehost", *args]
    if user:
        cmd = [need_tool("setpriv"), f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def test_cli_prints_pasteable_command(tmp_path: Path) -> None:
    require_toolchain()
    root = tmp_path / "h"
    proc = _cli("build", "--topology", "dgx-a100-mig", "--root", str(root))
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((root / ".fakehost/host.json").read_text())
    words = shlex.split(proc.stdout)
    assert proc.stdout.count("\n") == 1
    assert words[0] == f"FAKE_NVML_TOPOLOGY={meta['env']['FAKE_NVML_TOPOLOGY']}"
    assert words[1:] == meta["generate_argv"]
    assert words[1:] == [
        "gpu-cdi", "generate", "--driver-root", str(root), "--dev-root", str(root),
        "--proc-sys-root", str(root),
    ]  # fmt: skip
    assert "7 MIG devices" in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--topology", "dgx-z9"], "unknown topology 'dgx-z9'"),
        (["--topology", "dgx-a100", "--driver-version", "five"], "not a driver version: 'five'"),
        (["--topology", "/nonexistent/t.yaml"], "/nonexistent/t.yaml: cannot read topology"),
    ],
)
def test_cli_errors(tmp_path: Path, args: list[str], message: str) -> None:
    proc = _cli("build", "--root", str(tmp_path / "h"), *args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.fixture
def world_writable_dir() -> Iterator[Path]:
    """A directory outside pytest's 0700 tmp tree that an unprivileged user can write."""
    path = Path(tempfile.mkdtemp(prefix="fakehost-nobody-"))
    os.chmod(path, 0o777)
    yield path
    shutil.rmtree(path)


def test_cli_without_root_skips_device_nodes(world_writable_dir: Path) -> None:
    """Run as nobody: device nodes are skipped with a clear note, the rest is built."""
    need(os.geteuid() == 0, "switching to the unprivileged user nobody needs root")
    require_toolchain()
    from gpu_cdi_fakehost.compile import build_fake_nvml, build_stub_template

    build_fake_nvml()  # warm cache (nobody may not write it)
    build_stub_template()
    root = world_writable_dir / "h"
    proc = _cli("build", "--topology", "dgx-a100", "--root", str(root), user="65534")
    assert proc.returncode == 0, proc.stderr
    assert "# note: not root: device nodes were not created (mknod needs root)" in proc.stderr
    assert (root / "dev/dri/by-path/pci-0000:07:00.0-card").is_symlink()
    assert not any(stat.S_ISCHR(p.lstat().st_mode) for p in (root / "dev").rglob("*"))
    assert (root / f"usr/lib/x86_64-linux-gnu/libnvidia-ml.so.{V}").is_file()


def test_printed_command_runs_the_generator(tmp_path: Path) -> None:
    """Pasting the printed line into a shell generates the spec of this host."""
    require_toolchain()
    bindir = Path(sys.executable).parent
    need((bindir / "gpu-cdi").is_file(), "needs the gpu-cdi console script next to python")
    root = tmp_path / "h"
    line = _cli("build", "--topology", "dgx-a100-mig", "--root", str(root)).stdout.strip()
    out = tmp_path / "spec.yaml"
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}
    proc = subprocess.run(
        ["sh", "-c", f"{line} --output {shlex.quote(str(out))}"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    names = {d["name"] for d in yaml.safe_load(out.read_text())["devices"]}
    mig_names = {"0:0", "0:1", "0:2", "0:3", "1:0", "1:1", "1:2"}
    assert mig_names | {"2", "7", "all", "MIG-0a1e4104-7360-54ec-adf6-ad31cb384e04"} <= names
    assert not {"0", "1"} & names  # MIG-mode GPUs are not full devices


def test_cli_list() -> None:
    proc = _cli("list")
    assert proc.returncode == 0
    names = proc.stdout.split()
    assert {"dgx-a100", "dgx-a100-mig", "dgx-h100", "workstation", "scale-64"} <= set(names)


def test_fakehost_fields(fakehost: FakeHostFactory) -> None:
    host: FakeHost = fakehost("dgx-h100")
    assert host.env == {"FAKE_NVML_TOPOLOGY": str(host.root / ".fakehost/nvml-topology.txt")}
    assert host.command_line().startswith(f"FAKE_NVML_TOPOLOGY={host.nvml_topology_file} gpu-cdi")
