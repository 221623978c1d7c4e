"""A whole node on the fake host, as an operator sets it up:

    gpu-cdi install-hook  ->  gpu-cdi generate --hook-path <what it printed>
    ->  gpu-cdi configure containerd  ->  gpu-cdi-nri  ->  a CRI container asking for GPU 0

and the same spec under podman and Docker. In every runtime the container must see its device nodes
(GPU 0's, not GPU 1's) and `ldconfig -p` must list the driver libraries: proof that the
installed one-file hook ran (update-ldcache) from where the spec says.

Each runtime runs in every release the suite has (containerd 1.7.24 and 2.1, podman 4.3 and
5.4, Docker 28: tests/e2e/fixtures.py). containerd starts from the harness's config with NRI off
(as containerd 1.7 ships it); only `gpu-cdi configure containerd` turns it on. The spec is
cdiVersion 0.5.0, which every runtime here reads (podman 4.3 reads nothing newer). The host's
static /sbin/ldconfig is bind-mounted into the busybox image so that the hook and the test can
run it.
"""

from __future__ import annotations

import shutil
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


# -- what a GPU container must see -------------------------------------------------------------


def assert_gpu_0(output: str) -> None:
    """GPU 0's nodes and the control nodes, not GPU 1's; the driver libraries in ld.so.cache."""
    seen = parse(output)
    assert {"nvidia0", "nvidiactl", "nvidia-uvm"} <= set(seen.dev), seen.dev
    assert "nvidia1" not in seen.dev
    for soname in ("libcuda.so.1", "libnvidia-ml.so.1"):
        assert f"{soname} (libc6,x86-64) => {LIBDIR}/{soname}" in seen.ldcache, seen.ldcache


# -- the runtimes ---------------------------------------------------------------------------------


def test_containerd_configured_with_gpu_cdi_nri(
    node: Node, containerd_version: str, tmp_path: Path
) -> None:
    """containerd from a config only `gpu-cdi configure containerd` turned NRI on in; the plugin
    attached; a CRI container asking for GPU 0 by NVIDIA_VISIBLE_DEVICES. containerd 2.1 reads
    the node's spec dir (configure added it), so the plugin picks native mode there and
    containerd injects the devices itself; on 1.7.24 (no CDI over NRI) the plugin resolves."""
    from tests.e2e import paths
    from tests.e2e.fixtures import require_containerd
    from tests.e2e.harness import Containerd
    from tests.plugin.e2e_support import attached

    require_containerd(containerd_version)

    class Configured(Containerd):
        """The harness's containerd, started from its config file as configured."""

        def config_toml(self) -> str:
            return self.config_path.read_text()

    ctd = Configured(version=containerd_version, nri=False)
    try:
        ctd.config_path.write_text(Containerd.config_toml(ctd))  # NRI off, as 1.7 ships it
        proc = gpu_cdi(
            ["configure", "containerd", "--config", str(ctd.config_path), "--cdi.enabled",
             "--cdi.spec-dir", str(node.cdi_dir)]
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert "NRI enabled" in proc.stderr
        ctd.config = attrs.evolve(ctd.config, nri=True)  # start() then waits for the NRI socket
        ctd.start()
        with attached(ctd, [node.cdi_dir], tmp_path / "plugin.log") as plugin, ctd.cri() as cri:
            pod = cri.run_pod("gpu-node")
            result = cri.run(
                pod, "gpu", ["sh", "-c", SHOW],
                env={"NVIDIA_VISIBLE_DEVICES": "0"}, mounts=[(LDCONFIG, LDCONFIG, True)],
            )  # fmt: skip
            assert result.exit_code == 0, result.logs
            assert_gpu_0(result.logs)
            hooks = result.spec["hooks"]["createContainer"]
            assert {h["path"] for h in hooks} == {str(node.hook)}
            native = paths.containerd_release(containerd_version).config_version == 3
            assert f"mode={'native' if native else 'resolve'}" in plugin.log()
    finally:
        ctd.close()


def test_podman_runs_the_same_spec(node: Node, podman: Any) -> None:
    proc = podman.run(
        [node.spec_path], ["nvidia.com/gpu=0"], SHOW, options=["-v", f"{LDCONFIG}:{LDCONFIG}:ro"]
    )
    assert proc.returncode == 0, proc.stderr
    assert_gpu_0(proc.stdout)


def test_docker_runs_the_same_spec(node: Node, docker: Any) -> None:
    spec = Path(docker.cdi_dir) / "gpu-cdi-node-e2e.yaml"
    shutil.copy(node.spec_path, spec)
    try:
        proc = docker.run(["nvidia.com/gpu=0"], SHOW, args=["-v", f"{LDCONFIG}:{LDCONFIG}:ro"])
    finally:
        spec.unlink()
    assert proc.returncode == 0, proc.stderr
    assert_gpu_0(proc.stdout)
