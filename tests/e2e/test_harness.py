"""The harness itself: a real containerd runs pods, reports OCI specs, survives restarts."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.e2e import paths
from tests.e2e.cri import CriError, parse_cri_log
from tests.e2e.fixtures import require_containerd
from tests.e2e.harness import BASE_ROOT, HarnessError, sweep_stale
from tests.e2e.image import build_layer
from tests.require import need


def test_echo_hello_reaches_the_log(cri: Any) -> None:
    pod = cri.run_pod("hello")
    run = cri.run(pod, "echo", ["echo", "hello"])
    assert run.exit_code == 0
    assert run.logs == "hello\n"


def test_exit_code_and_stderr_are_reported(cri: Any) -> None:
    pod = cri.run_pod("exit")
    run = cri.run(pod, "fail", ["sh", "-c", "echo oops >&2; exit 7"])
    assert run.exit_code == 7
    assert cri.logs(run.container_id, stream="stderr") == "oops\n"
    assert cri.logs(run.container_id, stream="stdout") == ""


def test_oci_spec_carries_env_and_devices(cri: Any) -> None:
    pod = cri.run_pod("spec")
    cid = cri.create_container(
        pod,
        "spec",
        command=["true"],
        env={"E2E_VAR": "x=1"},
        annotations={"example.com/note": "kept"},
        devices=[("/dev/null", "/dev/e2e-null", "rw")],
    )
    spec = cri.oci_spec(cid)
    assert spec["process"]["args"] == ["true"]
    assert "E2E_VAR=x=1" in spec["process"]["env"]
    # containerd copies CRI annotations into the spec only when allow-listed
    assert "example.com/note" not in spec["annotations"]
    assert spec["annotations"]["io.kubernetes.cri.container-name"] == "spec"
    paths_in_spec = [d["path"] for d in spec["linux"]["devices"]]
    assert "/dev/e2e-null" in paths_in_spec


CDI_SPEC = {
    "cdiVersion": "0.5.0",
    "kind": "e2e.example.com/dev",
    "devices": [{"name": "one", "containerEdits": {"env": ["E2E_CDI=one"]}}],
}


def test_cdi_device_is_injected_by_containerd(containerd: Any, cri: Any) -> None:
    spec_file = Path(containerd.cdi_dir) / "e2e-harness.json"
    spec_file.write_text(json.dumps(CDI_SPEC))
    try:
        pod = cri.run_pod("cdi")
        run = cri.run(
            pod, "cdi", ["sh", "-c", "echo $E2E_CDI"], cdi_devices=["e2e.example.com/dev=one"]
        )
        assert run.logs == "one\n"
        by_annotation = cri.create_container(
            pod, "ann", command=["true"], annotations={"cdi.k8s.io/x": "e2e.example.com/dev=one"}
        )
        assert "E2E_CDI=one" in cri.oci_spec(by_annotation)["process"]["env"]
        with pytest.raises(CriError) as err:
            cri.create_container(
                pod, "nodev", command=["true"], cdi_devices=["e2e.example.com/dev=two"]
            )
        assert "e2e.example.com/dev=two" in err.value.details
    finally:
        spec_file.unlink()


def test_cdi_disabled_by_config(containerd_factory: Any) -> None:
    ctd = containerd_factory(enable_cdi=False)
    assert "enable_cdi = false" in ctd.config_path.read_text()
    (ctd.cdi_dir / "e2e.json").write_text(json.dumps(CDI_SPEC))
    with ctd.cri() as client:
        pod = client.run_pod("nocdi")
        cid = client.create_container(
            pod, "c", command=["true"], annotations={"cdi.k8s.io/x": "e2e.example.com/dev=one"}
        )
        assert "E2E_CDI=one" not in client.oci_spec(cid)["process"]["env"]


def test_unknown_image_error_carries_containerd_message(cri: Any) -> None:
    pod = cri.run_pod("noimage")
    with pytest.raises(CriError) as err:
        cri.create_container(pod, "c", image="localhost/does-not/exist:1", command=["true"])
    assert err.value.code != grpc.StatusCode.OK
    assert "localhost/does-not/exist:1" in str(err.value)


def test_build_image_returns_once_cri_resolves_it(containerd: Any, cri: Any) -> None:
    # CRI's image store follows containerd's import by events: build_image waits for it.
    assert not cri.image_known("localhost/gpu-cdi-e2e/not-built:1")
    ref = containerd.build_image("localhost/gpu-cdi-e2e/known:1", extra_files={"x": "x\n"})
    assert cri.image_known(ref)


def test_restart_keeps_pods_and_images(containerd: Any, cri: Any) -> None:
    pod = cri.run_pod("restart")
    old_pid = containerd.pid
    containerd.restart()
    assert containerd.pid != old_pid
    run = cri.run(pod, "after", ["echo", "after restart"])
    assert run.logs == "after restart\n"


def test_extra_files_and_symlinks_in_custom_image(containerd: Any, cri: Any) -> None:
    ref = containerd.build_image(
        "localhost/gpu-cdi-e2e/hostile:1",
        extra_files={"etc/motd": "hi\n", "usr/local/bin/tool": (b"#!/bin/sh\necho tool\n", 0o755)},
        symlinks={"usr/lib/x86_64-linux-gnu": "/etc"},
    )
    pod = cri.run_pod("custom")
    run = cri.run(
        pod,
        "c",
        ["sh", "-c", "cat /etc/motd; tool; readlink /usr/lib/x86_64-linux-gnu"],
        image=ref,
    )
    assert run.logs == "hi\ntool\n/etc\n"


def test_nri_socket_is_served(containerd: Any) -> None:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(containerd.nri_socket)


def test_annotation_allow_list(containerd_factory: Any) -> None:
    ctd = containerd_factory(container_annotations=("example.com/*",), nri=False)
    with ctd.cri() as client:
        pod = client.run_pod("ann")
        cid = client.create_container(
            pod, "c", command=["true"], annotations={"example.com/note": "kept", "other/x": "y"}
        )
        annotations = client.oci_spec(cid)["annotations"]
    assert annotations["example.com/note"] == "kept"
    assert "other/x" not in annotations


def test_two_instances_do_not_share_anything(containerd: Any, containerd_factory: Any) -> None:
    other = containerd_factory(nri=False)
    assert other.base != containerd.base
    assert not os.path.exists(other.nri_socket)
    with other.cri() as client:
        pod = client.run_pod("other")
        assert client.run(pod, "c", ["echo", "other"]).logs == "other\n"
    other.close()
    assert not other.base.exists()
    assert containerd.running


def test_parse_cri_log_joins_partial_lines() -> None:
    text = (
        "2026-01-01T00:00:00.1Z stdout P abc\n"
        "2026-01-01T00:00:00.2Z stdout F def\n"
        "2026-01-01T00:00:00.3Z stderr F err\n"
        "2026-01-01T00:00:00.4Z stdout F \n"
    )
    assert parse_cri_log(text) == "abcdef\nerr\n\n"
    assert parse_cri_log(text, "stderr") == "err\n"


def test_layer_has_busybox_applets_and_extras() -> None:
    need(paths.busybox_path() is not None, "needs busybox-static")
    import io
    import tarfile

    layer = build_layer(symlinks={"a/b/link": "../../etc"}, extra_files={"x/y": "z"})
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        names = tar.getnames()
    assert {"bin/busybox", "bin/sh", "a", "a/b", "a/b/link", "x", "x/y"} <= set(names)


def test_preinstalled_plugin_wrapper_gets_env_and_log(containerd_factory: Any) -> None:
    ctd = containerd_factory(start=False, plugin_registration_timeout="1s")
    ctd.install_plugin_command(
        "10", "envdump", ["/usr/bin/env"], env={"EXTRA": "a b"}, config="cfg\n"
    )
    if ctd.config.version == "1.7":
        # containerd 1.7.24 (NRI 0.6.1) treats a pre-installed plugin that never registers as fatal
        with pytest.raises(HarnessError, match="failed to register plugin"):
            ctd.start()
    else:
        # 2.1 logs it and carries on
        ctd.start()
        ctd.wait_for_log(r'failed to start pre-installed NRI plugin \\"envdump\\"')
    dumped = ctd.plugin_log("envdump").read_text().split("\n")
    assert "NRI_PLUGIN_NAME=envdump" in dumped
    assert "NRI_PLUGIN_IDX=10" in dumped
    assert "NRI_PLUGIN_SOCKET=3" in dumped
    assert "EXTRA=a b" in dumped
    assert (ctd.conf_dir / "10-envdump.conf").read_text() == "cfg\n"


def test_sweep_removes_dirs_of_dead_sessions() -> None:
    require_containerd()
    dead = subprocess.Popen(["true"])
    dead.wait()
    BASE_ROOT.mkdir(parents=True, exist_ok=True)
    stale = BASE_ROOT / f"{dead.pid}-stale"
    (stale / "state").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "stale", str(stale / "state")], check=True)
    mine = BASE_ROOT / f"{os.getpid()}-alive"
    mine.mkdir()
    try:
        assert stale in sweep_stale()
        assert not stale.exists()
        assert mine.exists()
        with open("/proc/self/mountinfo") as f:
            assert str(stale) not in f.read()
    finally:
        mine.rmdir()


def test_runs_the_release_it_was_asked_for(
    containerd: Any, cri: Any, containerd_version: str
) -> None:
    reply = cri.version()
    assert reply.runtime_name == "containerd"
    assert reply.runtime_version.lstrip("v").startswith(containerd_version + ".")
    config_version = paths.containerd_release(containerd_version).config_version
    assert containerd.config_path.read_text().startswith(f"version = {config_version}\n")
