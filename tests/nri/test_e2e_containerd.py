"""nri_plugin.protocol against a real containerd 1.7.24 with NRI (tests/e2e harness).

The plugin under test is tests/nri/sample_plugin.py in adjust mode: env GPU_CDI_TEST, device
node /dev/gpu-cdi-null (char 1:3), a read-only bind mount at /gpu-cdi-test, annotation
gpu-cdi.test/adjusted; it fails containers whose pod asks for it.
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.nri import sample_plugin
from tests.nri.e2e_plugin import REPO, ExternalPlugin, plugin_argv

pytestmark = [pytest.mark.e2e]

CHECK = (
    "echo env=$GPU_CDI_TEST; ls -l /dev/gpu-cdi-null; cat /gpu-cdi-test/marker; "
    "touch /gpu-cdi-test/x 2>/dev/null && echo writable || echo read-only"
)


@pytest.fixture
def plugin(containerd: Any, tmp_path: Path) -> Iterator[ExternalPlugin]:
    with ExternalPlugin(containerd.nri_socket, tmp_path) as p:
        p.wait_for("synchronized")
        yield p


def assert_adjusted(spec: dict[str, Any], name: str, mount_source: Path) -> None:
    env = spec["process"]["env"]
    assert env.count(f"{sample_plugin.ENV_KEY}={name}") == 1, env
    assert [e for e in env if e.startswith(sample_plugin.ENV_KEY + "=")] == [
        f"{sample_plugin.ENV_KEY}={name}"
    ]
    devices = [d for d in spec["linux"]["devices"] if d["path"] == sample_plugin.DEVICE_PATH]
    assert len(devices) == 1 and (devices[0]["type"], devices[0]["major"], devices[0]["minor"]) == (
        "c",
        1,
        3,
    )
    assert devices[0]["fileMode"] == 0o666
    allow = spec["linux"]["resources"]["devices"]
    assert {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"} in allow
    mounts = [m for m in spec["mounts"] if m["destination"] == sample_plugin.MOUNT_DEST]
    assert len(mounts) == 1 and mounts[0]["source"] == str(mount_source)
    assert "ro" in mounts[0]["options"]
    assert spec["annotations"][sample_plugin.ADJUSTED_ANNOTATION] == name


def test_adjusts_a_container_spec_and_what_runs_inside(
    plugin: ExternalPlugin, cri: Any, containerd: Any
) -> None:
    pod = cri.run_pod("nri-adjust")
    run = cri.run(pod, "adjusted", ["sh", "-c", CHECK])
    assert run.exit_code == 0, run.logs
    assert_adjusted(run.spec, "adjusted", plugin.mount_source)
    lines = run.logs.splitlines()
    assert lines[0] == "env=adjusted"
    assert re.match(r"^crw-rw-rw-.* 1,\s+3 ", lines[1]), lines
    assert lines[2:] == ["from the host", "read-only"]
    assert [r["name"] for r in plugin.records()] == ["adjusted"]
    assert "50-e2e" in containerd.log_text()


def test_handler_error_fails_only_that_container(plugin: ExternalPlugin, cri: Any) -> None:
    from tests.e2e.cri import CriError

    message = "no GPU for container doomed: quota exhausted"
    pod = cri.run_pod("nri-fail", annotations={f"{sample_plugin.FAIL_ANNOTATION}.doomed": message})
    with pytest.raises(CriError) as err:
        cri.create_container(pod, "doomed", command=["true"])
    assert err.value.code.name == "INVALID_ARGUMENT"
    assert message in err.value.details
    assert "failed to get NRI adjustment" in err.value.details
    ok = cri.create_container(pod, "fine", command=["true"])
    assert_adjusted(cri.oci_spec(ok), "fine", plugin.mount_source)
    assert [r["name"] for r in plugin.records()] == ["doomed", "fine"]


def test_reconnects_after_a_containerd_restart(containerd_factory: Any, tmp_path: Path) -> None:
    ctd = containerd_factory()  # a private one: restarting the shared one would disturb others
    with ExternalPlugin(ctd.nri_socket, tmp_path) as plugin, ctd.cri() as cri:
        plugin.wait_for("synchronized")
        pod = cri.run_pod("nri-restart")
        first = cri.create_container(pod, "before", command=["true"])
        assert_adjusted(cri.oci_spec(first), "before", plugin.mount_source)
        ctd.restart()  # no Shutdown call: the plugin just sees EOF
        plugin.wait_for("synchronized", count=2, timeout=30)
        assert plugin.proc.poll() is None
        after = cri.create_container(pod, "after", command=["true"])
        assert_adjusted(cri.oci_spec(after), "after", plugin.mount_source)
        assert [r["name"] for r in plugin.records()] == ["before", "after"]


def test_two_hundred_concurrent_containers(plugin: ExternalPlugin, cri: Any) -> None:
    pod = cri.run_pod("nri-many")
    names = [f"c{i:03d}" for i in range(200)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=32) as pool:
        ids = dict(
            zip(
                names,
                pool.map(lambda n: cri.create_container(pod, n, command=["true"]), names),
                strict=True,
            )
        )
        specs = dict(zip(names, pool.map(cri.oci_spec, ids.values()), strict=True))
    for name in names:
        assert_adjusted(specs[name], name, plugin.mount_source)
    seen = collections.Counter(r["id"] for r in plugin.records())
    assert seen == collections.Counter(ids.values())  # each exactly once, none lost


def test_preinstalled_plugin_launched_by_containerd(
    containerd_factory: Any, tmp_path: Path
) -> None:
    ctd = containerd_factory(start=False)
    record = tmp_path / "pre-record.jsonl"
    mount_source = tmp_path / "pre-mount"
    mount_source.mkdir()
    (mount_source / "marker").write_text("from the host\n", encoding="utf-8")
    ctd.install_plugin_command(
        "10",
        "gpu-cdi-sample",
        plugin_argv(
            "--mode", "adjust", "--name", "ignored", "--idx", "99",
            "--record", str(record), "--mount-source", str(mount_source),
        ),
        env={"PYTHONPATH": str(REPO)},
    )  # fmt: skip
    ctd.start()  # containerd exits if a pre-installed plugin does not register
    with ctd.cri() as cri:
        pod = cri.run_pod("nri-pre")
        run = cri.run(pod, "pre", ["sh", "-c", CHECK])
        assert run.exit_code == 0, run.logs
        assert_adjusted(run.spec, "pre", mount_source)
        (rec,) = _records(record)
        assert rec["name"] == "pre"
        assert _parent_of(rec["pid"]) == ctd.pid  # launched by containerd itself
    assert "10-gpu-cdi-sample" in ctd.log_text()
    assert "configured" in ctd.plugin_log("gpu-cdi-sample").read_text(encoding="utf-8")


def _records(path: Path) -> list[dict[str, Any]]:
    import json

    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def _parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return None


def test_no_plugin_left_behind(containerd: Any) -> None:
    """The shared containerd keeps no plugin of ours attached between tests."""
    assert not any(containerd.plugin_dir.iterdir())
    assert os.path.exists(containerd.nri_socket)
