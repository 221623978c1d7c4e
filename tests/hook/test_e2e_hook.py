"""End to end: a spec from `gpu-cdi generate` on a fake host, containerd + runc run its hooks.

Inside the container `ldconfig -p` must list the injected driver libraries and the links must
exist; with a hostile image (library dir linked to /etc, ld.so.conf.d a file) the start fails
with the hook's one-line error and the host's /etc is untouched.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.cri import CriError
from tests.hook.helpers import HOOK_MAIN, LIBDIR
from tests.require import need, need_root

pytestmark = pytest.mark.e2e

VENDOR = "hooktest.example.com"
TOPOLOGY = "workstation"  # one GPU, driver 570.172.08
PROJECT = Path(__file__).resolve().parents[2]
CONSOLE_SCRIPT = str(Path(sys.executable).parent / "gpu-cdi-hook")


@pytest.fixture(scope="module")
def fake_host(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A one-GPU fake host (driver files, device nodes, fake NVML)."""
    need_root()
    try:
        from gpu_cdi_fakehost.builder import build_host
    except ImportError:
        need(False, "gpu_cdi_fakehost is not installed (pip install -e tests/fakehost)")
        raise
    return build_host(TOPOLOGY, tmp_path_factory.mktemp("hook-e2e-host"))


def generate(host: Any) -> dict[str, Any]:
    """The spec `gpu-cdi generate` writes for `host`, hooks pointing at our console script."""
    argv = [sys.executable, "-m", "cdi", *host.generate_argv[1:]]
    argv += ["--vendor", VENDOR, "--hook-path", CONSOLE_SCRIPT]
    proc = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env={**os.environ, **host.env},
        cwd=PROJECT,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    spec: dict[str, Any] = yaml.safe_load(proc.stdout)
    return spec


def fast_form(spec: dict[str, Any]) -> dict[str, Any]:
    """The same spec with hooks in the form `cdi.hook.command.hook_command` recommends."""
    from cdi.hook.command import HOOK_ENV, hook_command

    path, prefix = hook_command(sys.executable, HOOK_MAIN)
    edits = [spec["containerEdits"], *(d["containerEdits"] for d in spec["devices"])]
    for edit in edits:
        for hook in edit.get("hooks", []):
            hook.update(path=path, args=[*prefix, *hook["args"][1:]], env=HOOK_ENV)
    return spec


@pytest.fixture
def install_spec(containerd: Any) -> Iterator[Any]:
    """Writes a spec into containerd's CDI dir for one test."""
    written: list[Path] = []

    def install(spec: dict[str, Any]) -> None:
        path = Path(containerd.cdi_dir) / "gpu-cdi-hook-e2e.yaml"
        path.write_text(yaml.safe_dump(spec))
        written.append(path)

    yield install
    for path in written:
        path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def ldconfig_image(containerd: Any) -> str:
    """busybox plus the host's static ldconfig, so `ldconfig -p` runs in the container."""
    data = Path("/sbin/ldconfig").read_bytes()
    return str(
        containerd.build_image(
            "localhost/gpu-cdi-e2e/hook-ldconfig:1", extra_files={"sbin/ldconfig": (data, 0o755)}
        )
    )


def host_etc_state() -> dict[str, object]:
    """What a hook escaping into the host's /etc would change."""
    etc = Path("/etc")
    conf_d = etc / "ld.so.conf.d"
    cache = etc / "ld.so.cache"
    return {
        "lib entries": sorted(p.name for p in etc.iterdir() if p.name.startswith("lib")),
        "ld.so.conf.d": sorted((p.name, p.read_bytes()) for p in conf_d.iterdir() if p.is_file())
        if conf_d.is_dir()
        else None,
        "ld.so.cache": hashlib.sha256(cache.read_bytes()).hexdigest() if cache.exists() else None,
        "ld.so.conf": (etc / "ld.so.conf").read_bytes() if (etc / "ld.so.conf").exists() else None,
    }


CHECK = (
    "/sbin/ldconfig -p; echo ---;"
    " for f in libcuda.so.1 libcuda.so libnvidia-ml.so.1 libnvidia-egl-gbm.so.1; do"
    " readlink {lib}/$f; done;"
    " echo ---; ls /dev/dri/by-path;"
    " echo ---; cat /etc/nvidia/nvidia-application-profiles-rc.d/10-container.conf"
)
PROFILE = (
    '{"profiles":[{"name":"_container_","settings":["EGLVisibleDGPUDevices",0x1]}],'
    '"rules":[{"pattern":[],"profile":"_container_"}]}'
)


@pytest.mark.parametrize("form", ["console-script", "fast"])
def test_container_runs_hooks_and_finds_libraries(
    fake_host: Any, cri: Any, install_spec: Any, ldconfig_image: str, form: str
) -> None:
    spec = generate(fake_host)
    # One hook process per container start: one hook in the spec, none in any device.
    assert len(spec["containerEdits"]["hooks"]) == 1
    assert not [d["name"] for d in spec["devices"] if "hooks" in d["containerEdits"]]
    install_spec(fast_form(spec) if form == "fast" else spec)
    version = fake_host.driver_version
    pod = cri.run_pod(f"hook-{form}")
    run = cri.run(
        pod,
        "gpu",
        ["sh", "-c", CHECK.format(lib=LIBDIR)],
        image=ldconfig_image,
        cdi_devices=[f"{VENDOR}/gpu=0"],
    )
    assert run.exit_code == 0, run.logs
    listing, links, by_path, profile = cri.logs(run.container_id, "stdout").split("---\n")
    sonames = ("libcuda.so.1", "libnvidia-ml.so.1", "libnvidia-ptxjitcompiler.so.1")
    for soname in (*sonames, "libnvidia-egl-gbm.so.1", "libnvidia-egl-wayland.so.1"):
        assert f"{soname} (libc6,x86-64) => {LIBDIR}/{soname}" in listing, listing
    assert links.split() == [
        f"libcuda.so.{version}",
        "libcuda.so.1",
        f"libnvidia-ml.so.{version}",
        "libnvidia-egl-gbm.so.1.1.1",  # made by the ld cache step, as ldconfig run as root does
    ]
    assert by_path.split() == ["pci-0000:01:00.0-card", "pci-0000:01:00.0-render"]
    assert profile == PROFILE  # EGL and Vulkan see GPU 0 (minor 0) only


def test_hostile_images_cannot_reach_the_host(
    fake_host: Any, cri: Any, containerd: Any, install_spec: Any
) -> None:
    install_spec(fast_form(generate(fake_host)))
    before = host_etc_state()
    pod = cri.run_pod("hook-hostile")
    # 1. The library dir is a link to /etc: everything lands in the container's own /etc.
    linked = containerd.build_image(
        "localhost/gpu-cdi-e2e/hook-hostile-link:1",
        extra_files={"sbin/ldconfig": (Path("/sbin/ldconfig").read_bytes(), 0o755)},
        symlinks={LIBDIR.lstrip("/"): "/etc"},
    )
    run = cri.run(
        pod,
        "linked",
        ["sh", "-c", "readlink /etc/libcuda.so.1; /sbin/ldconfig -p | grep -c libcuda.so.1"],
        image=linked,
        cdi_devices=[f"{VENDOR}/gpu=0"],
    )
    assert run.exit_code == 0, run.logs
    assert run.logs.split() == [f"libcuda.so.{fake_host.driver_version}", "1"]
    # 2. Where the hook must write there is a file: the start fails with the hook's reason.
    blocked = containerd.build_image(
        "localhost/gpu-cdi-e2e/hook-hostile-file:1",
        extra_files={"etc/ld.so.conf.d": "not a directory\n"},
        symlinks={LIBDIR.lstrip("/"): "/etc"},
    )
    cid = cri.create_container(
        pod, "blocked", image=blocked, command=["true"], cdi_devices=[f"{VENDOR}/gpu=0"]
    )
    with pytest.raises(CriError) as err:
        cri.start(cid)
    assert "gpu-cdi-hook: update-ldcache:" in err.value.details
    assert "/etc/ld.so.conf.d is not a directory" in err.value.details
    assert "Traceback" not in err.value.details
    # 3. ld.so.conf includes /dev/zero (runc made it): refused before ldconfig would read it
    # without end; the pod event names the action and the file.
    zero = containerd.build_image(
        "localhost/gpu-cdi-e2e/hook-hostile-zero:1",
        extra_files={"etc/ld.so.conf": "include /etc/ld.so.conf.d/*.conf\ninclude /dev/zero\n"},
    )
    cid = cri.create_container(
        pod, "zero", image=zero, command=["true"], cdi_devices=[f"{VENDOR}/gpu=0"]
    )
    with pytest.raises(CriError) as err:
        cri.start(cid)
    line = err.value.details
    assert "gpu-cdi-hook: update-ldcache: /dev/zero" in line, line
    assert "is a character device (included from /etc/ld.so.conf)" in line, line
    assert "Traceback" not in line
    assert host_etc_state() == before
