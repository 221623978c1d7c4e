"""A whole node on the fake host, as an operator sets it up:

    gpu-cdi install-hook  ->  gpu-cdi generate --hook-path <what it printed>
    ->  gpu-cdi configure containerd  ->  gpu-cdi-nri  ->  a CRI container asking for GPU 0

and the same spec under podman. In every runtime the container must see its device nodes
(GPU 0's, not GPU 1's) and `ldconfig -p` must list the driver libraries: proof that the
installed one-file hook ran (update-ldcache) from where the spec says.

The containerd starts from the harness's config with NRI off (as containerd 1.7 ships it);
only `gpu-cdi configure containerd` turns it on. The spec is cdiVersion 0.5.0, which every
runtime here reads (podman 4.3 reads nothing newer). The host's static /sbin/ldconfig is
bind-mounted into the busybox image so that the hook and the test can run it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import attrs
import pytest
import yaml

from tests.node.support import gpu_cdi, install_hook
from tests.require import need, need_root

pytestmark = pytest.mark.e2e

TOPOLOGY = "dgx-a100"
LIBDIR = "/usr/lib/x86_64-linux-gnu"
SHOW = "ls /dev; echo ---; /sbin/ldconfig -p"
LDCONFIG = "/sbin/ldconfig"


class Node:
    """The fake host with the hook installed and the spec generated (in `cdi_dir`)."""

    def __init__(self, host: Any, hook: Path, cdi_dir: Path) -> None:
        self.host = host
        self.hook = hook
        self.cdi_dir = cdi_dir
        self.spec_path = cdi_dir / "nvidia.yaml"


class Seen(NamedTuple):
    """What the container printed: its /dev entries and its `ldconfig -p`."""

    dev: list[str]
    ldcache: str


def parse(output: str) -> Seen:
    dev, _, ldcache = output.partition("---\n")
    return Seen(dev.split(), ldcache)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Node:
    need_root()
    try:
        from gpu_cdi_fakehost.builder import build_host
    except ImportError:
        need(False, "gpu_cdi_fakehost is not installed (pip install -e tests/fakehost)")
        raise
    base = tmp_path_factory.mktemp("node")
    host = build_host(TOPOLOGY, base / "host")
    prefix = base / "opt" / "gpu-cdi" / "bin"
    prefix.mkdir(parents=True)
    hook = install_hook(prefix)
    cdi_dir = base / "cdi"
    cdi_dir.mkdir()
    spec = cdi_dir / "nvidia.yaml"
    proc = gpu_cdi(
        [*host.generate_argv[1:], "--hook-path", str(hook), "--cdi-version", "0.5.0",
         "--output", str(spec)],
        host.env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr
    data = yaml.safe_load(spec.read_text())
    assert {h["path"] for h in data["containerEdits"]["hooks"]} == {str(hook)}
    return Node(host, hook, cdi_dir)


# -- the runtimes ---------------------------------------------------------------------------------

Runner = Callable[[Node, str, str], str]  # (node, GPU index, shell command) -> container output


@pytest.fixture(scope="module")
def containerd_node(node: Node, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runner]:
    """containerd configured by `gpu-cdi configure containerd`, gpu-cdi-nri attached."""
    from tests.e2e.fixtures import require_containerd

    require_containerd()
    from tests.e2e.harness import Containerd
    from tests.plugin.e2e_support import attached

    class Configured(Containerd):
        """The harness's containerd, started from the config file as configured."""

        def config_toml(self) -> str:
            return self.config_path.read_text()

    ctd = Configured(nri=False)
    try:
        ctd.config_path.write_text(Containerd.config_toml(ctd))  # NRI off, as 1.7 ships
        proc = gpu_cdi(
            ["configure", "containerd", "--config", str(ctd.config_path), "--cdi.enabled",
             "--cdi.spec-dir", str(node.cdi_dir)]
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert "NRI enabled" in proc.stderr
        ctd.config = attrs.evolve(ctd.config, nri=True)  # start() then waits for the NRI socket
        ctd.start()
        log = tmp_path_factory.mktemp("nri") / "plugin.log"
        with attached(ctd, [node.cdi_dir], log), ctd.cri() as cri:

            def run(node: Node, gpu: str, command: str) -> str:
                pod = cri.run_pod(f"gpu-{gpu}")
                result = cri.run(
                    pod, "gpu", ["sh", "-c", command],
                    env={"NVIDIA_VISIBLE_DEVICES": gpu},
                    mounts=[(LDCONFIG, LDCONFIG, True)],
                )  # fmt: skip
                assert result.exit_code == 0, result.logs
                hooks = result.spec["hooks"]["createContainer"]
                assert {h["path"] for h in hooks} == {str(node.hook)}
                return str(result.logs)

            yield run
    finally:
        ctd.close()


@pytest.fixture(scope="module")
def podman_node(tmp_path_factory: pytest.TempPathFactory) -> Runner:
    """podman 4.3 (bookworm's), the spec alone in /var/run/cdi of a private mount namespace."""
    from tests.generator.test_podman import IMAGE, Podman

    need_root()
    exe = subprocess.run(["podman", "--version"], capture_output=True, text=True, check=False)
    need(
        " 4." in exe.stdout, f"needs podman 4.x (bookworm's /usr/bin/podman), found {exe.stdout!r}"
    )
    podman = Podman(tmp_path_factory.mktemp("podman"))

    def run(node: Node, gpu: str, command: str) -> str:
        script = (
            "set -e; mkdir -p /run/cdi; mount -t tmpfs gpu-cdi-test /run/cdi; "
            f'cp "{node.spec_path}" /run/cdi/; exec "$@"'
        )
        argv = [podman.exe, *podman.flags, "run", "--rm", "--network", "none",
                "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768",
                "-v", f"{LDCONFIG}:{LDCONFIG}:ro", "--device", f"nvidia.com/gpu={gpu}",
                IMAGE, "sh", "-c", command]  # fmt: skip
        proc = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *argv],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    return run


RUNTIMES = {"containerd-1.7": "containerd_node", "podman-4.3": "podman_node"}


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_gpu_container_sees_its_devices_and_driver_libraries(
    node: Node, runtime: str, request: pytest.FixtureRequest
) -> None:
    run: Runner = request.getfixturevalue(RUNTIMES[runtime])
    seen = parse(run(node, "0", SHOW))
    assert {"nvidia0", "nvidiactl", "nvidia-uvm"} <= set(seen.dev), seen.dev
    assert "nvidia1" not in seen.dev
    for soname in ("libcuda.so.1", "libnvidia-ml.so.1"):
        assert f"{soname} (libc6,x86-64) => {LIBDIR}/{soname}" in seen.ldcache, seen.ldcache
