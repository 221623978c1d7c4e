"""The DaemonSet's containers run as they will run (issue 17): their commands, mounts and
security settings read from deploy/kubernetes/daemonset.yaml (never retyped), in a real
container (podman), with a fake node where the DaemonSet mounts the node's `/`.

The image is the offline busybox image plus launchers; this interpreter, venv and checkout are
bind-mounted read-only at their own paths (tests/e2e/interpreter.py), so the code under test
is what runs. "On the node itself" means chrooted into the fake node (the same module).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e import interpreter
from tests.e2e.podman import Podman
from tests.require import need, need_root, need_tool

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DAEMONSET = ROOT / "deploy" / "kubernetes" / "daemonset.yaml"
IMAGE = "localhost/gpu-cdi-test/gpu-cdi:checkout"
TOPOLOGY = "dgx-a100-mig"
NRI_TOPOLOGY = "dgx-a100"
DRIVER_CONTAINER = ("--driver-root=/run/nvidia/driver", "--dev-root=/")
LIBDIR = "/usr/lib/x86_64-linux-gnu"


def _pod_spec() -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(DAEMONSET.read_text()) if d]
    (ds,) = [d for d in docs if d["kind"] == "DaemonSet"]
    spec: dict[str, Any] = ds["spec"]["template"]["spec"]
    return spec


def _container(name: str) -> dict[str, Any]:
    spec = _pod_spec()
    (found,) = [c for c in spec["initContainers"] + spec["containers"] if c["name"] == name]
    return found


def _with_flags(command: Sequence[str], *flags: str) -> list[str]:
    """`command` with each `--flag=value` of `flags` replacing the manifest's (or added)."""
    names = {flag.split("=", 1)[0] for flag in flags}
    kept = [word for word in command if word.split("=", 1)[0] not in names]
    return [*kept, *flags]


def _without_flag(command: Sequence[str], name: str) -> list[str]:
    return [word for word in command if word.split("=", 1)[0] != name]


def podman_run_args(
    container: Mapping[str, Any],
    host_paths: Mapping[str, str],
    command: Sequence[str],
    env: Mapping[str, str],
) -> tuple[list[str], list[str], list[str]]:
    """(volumes, options, command) that run the manifest's `container` under podman.

    `host_paths` maps each hostPath of the pod's volumes to where that node path is here.
    """
    volumes = {v["name"]: v["hostPath"]["path"] for v in _pod_spec()["volumes"]}
    propagation = {"HostToContainer": "rslave", "Bidirectional": "rshared"}
    mounts = []
    for mount in container["volumeMounts"]:
        source = host_paths[volumes[mount["name"]]]
        opts = ["ro"] if mount.get("readOnly") else []
        opts += [propagation[mount["mountPropagation"]]] if "mountPropagation" in mount else []
        mounts.append(f"{source}:{mount['mountPath']}" + (":" + ",".join(opts) if opts else ""))
    mounts += [f"{path}:{path}:ro" for path in interpreter.bind_mounts()]
    sc = container.get("securityContext", {})
    options = ["--env", f"PATH={interpreter.PATH}"]
    for key, value in env.items():
        options += ["--env", f"{key}={value}"]
    if sc.get("privileged"):
        options.append("--privileged")
    if sc.get("readOnlyRootFilesystem"):
        options.append("--read-only")
    if "runAsUser" in sc:
        options += ["--user", str(sc["runAsUser"])]
    if sc.get("capabilities", {}).get("drop") == ["ALL"]:
        options += ["--cap-drop", "all"]
    if sc.get("allowPrivilegeEscalation") is False:
        options += ["--security-opt", "no-new-privileges"]
    return mounts, options, list(command)


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Podman:
    """A private podman holding the checkout's image."""
    need_root()
    need_tool("unshare")
    need(os.path.isfile("/bin/busybox"), "needs /bin/busybox (busybox-static)")
    engine = Podman(need_tool("podman"), tmp_path_factory.mktemp("podman"))
    engine.import_layer(interpreter.image_layer(), IMAGE)
    return engine


def run_container(podman: Podman, name: str, *args: Any, **kw: Any) -> str:
    """Run the manifest's container `name` to completion; returns its output."""
    volumes, options, command = podman_run_args(_container(name), *args, **kw)
    argv = podman.run_args(IMAGE, command, volumes=volumes, options=["--rm", *options])
    return podman("run", *argv).stdout


def _fake_node(tmp_path: Path, topology: str, layout: str) -> Any:
    from gpu_cdi_fakehost.builder import build_host

    host = build_host(topology, tmp_path / "node", layout_name=layout)
    # Made before both runs, so the node is the same one in both.
    (host.root / "run/cdi").mkdir(parents=True)
    (host.root / interpreter.PYROOT.lstrip("/")).mkdir()
    return host


@pytest.mark.parametrize("layout", ["host", "driver-container"])
def test_generate_in_the_daemonset_writes_the_spec_the_node_writes(
    podman: Podman, tmp_path: Path, layout: str
) -> None:
    host = _fake_node(tmp_path, TOPOLOGY, layout)
    command = _container("generate")["command"]
    if layout == "driver-container":
        command = _with_flags(command, *DRIVER_CONTAINER)
    out = tmp_path / "cdi"
    out.mkdir()
    topology = "/.fakehost/nvml-topology.txt"
    run_container(
        podman,
        "generate",
        {"/": str(host.root), "/var/run/cdi": str(out)},
        command,
        {"FAKE_NVML_TOPOLOGY": "/host" + topology},
    )
    in_container = (out / "nvidia.yaml").read_bytes()

    node_command = _without_flag(command, "--host-root")
    proc = interpreter.on_node(
        host.root, node_command[0], node_command[1:], {"FAKE_NVML_TOPOLOGY": topology}
    )
    assert proc.returncode == 0, proc.stderr
    on_node = (host.root / "run/cdi/nvidia.yaml").read_bytes()
    assert in_container == on_node

    # Paths as the node sees them: nothing of this machine's layout, the driver root kept.
    text = in_container.decode()
    assert str(tmp_path) not in text and "/host" not in text
    spec = yaml.safe_load(text)
    mounts = spec["containerEdits"]["mounts"]
    cuda = [m for m in mounts if m["containerPath"] == f"{LIBDIR}/libcuda.so.550.163.01"]
    prefix = "/run/nvidia/driver" if layout == "driver-container" else ""
    assert [m["hostPath"] for m in cuda] == [f"{prefix}{LIBDIR}/libcuda.so.550.163.01"]
    assert len(spec["devices"]) == 2 * (6 + 7) + 1  # index + uuid names, 6 GPUs + 7 MIG, all
    caps = [n for d in spec["devices"] for n in d["containerEdits"].get("deviceNodes", [])]
    assert any(n["path"].startswith("/dev/nvidia-caps/") for n in caps)  # /proc under /host
    assert any(n["path"].startswith("/dev/dri/") for n in caps)  # /sys under /host


# -- the NRI plugin, started the way the DaemonSet starts it --------------------------------


@pytest.fixture
def nri_node(podman: Podman, tmp_path: Path, containerd: Any) -> Iterator[tuple[Any, Path, Podman]]:
    """This machine as the node, a fake GPU driver on it, its spec written by the DaemonSet's
    generate command in a container (this machine's / at /host)."""
    from gpu_cdi_fakehost.builder import build_host

    host = build_host(NRI_TOPOLOGY, tmp_path / "gpus")
    hook = str(Path(sys.executable).parent / "gpu-cdi-hook")  # installed on this "node"
    argv = host.generate_argv[2:]
    flags = [f"{name}={value}" for name, value in zip(argv[::2], argv[1::2], strict=True)]
    command = _with_flags(_container("generate")["command"], *flags, f"--hook-path={hook}")
    spec_dir = tmp_path / "cdi"
    spec_dir.mkdir()
    env = {"FAKE_NVML_TOPOLOGY": "/host" + str(host.nvml_topology_file)}
    run_container(podman, "generate", {"/": "/", "/var/run/cdi": str(spec_dir)}, command, env)
    # The same flags on the node itself write the same bytes.
    node_command = _without_flag(command, "--host-root")
    node_command = _with_flags(node_command, f"--output={tmp_path / 'node.yaml'}")
    proc = subprocess.run(
        [sys.executable, "-m", "cdi", *node_command[1:]],
        capture_output=True,
        text=True,
        env={**os.environ, **host.env},
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert (spec_dir / "nvidia.yaml").read_bytes() == (tmp_path / "node.yaml").read_bytes()
    yield host, spec_dir, podman


def test_nri_plugin_in_the_daemonset_injects_a_gpu(
    nri_node: tuple[Any, Path, Podman], containerd: Any, cri: Any, tmp_path: Path
) -> None:
    _, spec_dir, podman = nri_node
    static = tmp_path / "etc-cdi"
    static.mkdir()
    main = _container("nri-plugin")
    paths = {
        "/": "/",
        "/var/run/nri": str(Path(containerd.nri_socket).parent),
        "/etc/cdi": str(static),
        "/var/run/cdi": str(spec_dir),
    }
    volumes, options, command = podman_run_args(main, paths, main["command"], {})
    name = f"gpu-cdi-nri-{os.getpid()}"
    argv = podman.run_args(IMAGE, command, volumes=volumes, options=["--name", name, *options])
    since = containerd.log_size()
    podman("run", "--detach", *argv)
    try:
        containerd.wait_plugin_connected("gpu-cdi", since=since, timeout=30)
        pod = cri.run_pod("in-container-nri")
        show = f"ls -l /dev/nvidia0 {LIBDIR}/libcuda.so*; echo NVD=$NVIDIA_VISIBLE_DEVICES"
        result = cri.run(pod, "gpu", ["sh", "-c", show], env={"NVIDIA_VISIBLE_DEVICES": "0"})
        logs = podman("logs", name).stdout + podman("logs", name).stderr
        assert result.exit_code == 0, f"{result.logs}\nplugin:\n{logs}"
        assert "195,   0" in result.logs  # /dev/nvidia0, completed from /host/<node>/dev
        assert f"{LIBDIR}/libcuda.so.550.163.01" in result.logs
        assert "libcuda.so.1 -> libcuda.so.550.163.01" in result.logs  # the node's hook ran
        assert "NVD=void" in result.logs
        assert "mode=resolve" in logs
    finally:
        podman("rm", "--force", "--time", "2", name)


# -- the hook, installed on the node by the DaemonSet's first init container ----------------


def test_install_hook_in_the_daemonset_puts_the_hook_where_generate_names_it(
    podman: Podman, tmp_path: Path
) -> None:
    node = tmp_path / "node"
    python = node / "usr" / "bin" / "python3.11"  # what install-hook checks on the node
    python.parent.mkdir(parents=True)
    python.write_bytes(b"")
    python.chmod(0o755)
    (python.parent / "python3").symlink_to("python3.11")
    hook_dir = node / "opt" / "gpu-cdi" / "bin"  # the hostPath volume (DirectoryOrCreate)
    hook_dir.mkdir(parents=True)
    container = _container("install-hook")
    volumes = {v["name"]: v["hostPath"]["path"] for v in _pod_spec()["volumes"]}
    host_paths = {path: str(node / path.lstrip("/")) for path in volumes.values()}
    printed = run_container(podman, "install-hook", host_paths, container["command"], {})
    generate = _container("generate")["command"]
    assert f"--hook-path={printed.strip()}" in generate
    hook = node / printed.strip().lstrip("/")
    assert hook.read_bytes().startswith(b"#!/usr/bin/python3 -IS\n")
    assert hook.stat().st_mode & 0o7777 == 0o755
    # The node's python3 (here: this machine's) runs it.
    proc = subprocess.run(
        ["/usr/bin/python3", "-IS", str(hook), "--version"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and proc.stdout.startswith("gpu-cdi-hook "), proc.stderr
    assert sorted(p.name for p in hook_dir.iterdir()) == ["gpu-cdi-hook"]
