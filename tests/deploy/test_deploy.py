"""deploy/: systemd units verify, Kubernetes manifests validate, commands parse with our CLIs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.require import need

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent


def _manifests() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def _daemonset() -> dict[str, Any]:
    (ds,) = [d for d in _manifests() if d["kind"] == "DaemonSet"]
    return ds


def test_manifests_validate_against_offline_schemas() -> None:
    files = sorted(str(p) for p in (DEPLOY / "kubernetes").glob("*.yaml"))
    assert files
    tool = BIN / "kubernetes-validate"
    out = subprocess.run(
        [str(tool), "--strict", *files], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("passed") == len(_manifests())


def test_strict_validation_catches_a_typo(tmp_path: Path) -> None:
    # Proves the validator above can fail: a misspelt field must be rejected.
    bad = (
        (DEPLOY / "kubernetes" / "daemonset.yaml")
        .read_text()
        .replace("volumeMounts", "volumeMount")
    )
    path = tmp_path / "bad.yaml"
    path.write_text(bad)
    out = subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode != 0


def _init(spec: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in spec["initContainers"] if c["name"] == name]
    return found


def test_daemonset_runs_generate_then_plugin_with_minimal_privileges() -> None:
    spec = _daemonset()["spec"]["template"]["spec"]
    init = _init(spec, "generate")
    main, device_plugin = spec["containers"]
    assert init["command"][:2] == ["gpu-cdi", "generate"]
    assert "--output=/var/run/cdi/nvidia.yaml" in init["command"]
    assert main["command"][0] == "gpu-cdi-nri"
    mounts = {m["mountPath"]: m for m in main["volumeMounts"]}
    assert "/var/run/nri" in mounts
    assert mounts["/etc/cdi"]["readOnly"] and mounts["/var/run/cdi"]["readOnly"]
    # All read the node through its / mounted read-only at /host, and say so with --host-root.
    volumes = {v["name"]: v for v in spec["volumes"]}
    for container in (init, main, device_plugin):
        assert "--host-root=/host" in container["command"]
        (host,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/host"]
        assert host["readOnly"] is True
        assert volumes[host["name"]]["hostPath"]["path"] == "/"
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert container["resources"]["limits"]["memory"]
    # Only the generator is privileged: NVML must open /dev/nvidiactl and /dev/nvidiaN. The
    # device plugin gets its GPUs from gpu-cdi-nri, as pods do.
    assert init["securityContext"]["privileged"] is True
    for container in (main, device_plugin):
        sc = container["securityContext"]
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert sc["allowPrivilegeEscalation"] is False
        assert "privileged" not in sc
    assert device_plugin["command"][0] == "gpu-cdi-device-plugin"
    assert {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"} in device_plugin["env"]
    mounts = {m["mountPath"] for m in device_plugin["volumeMounts"]}
    assert mounts == {"/var/lib/kubelet/device-plugins", "/host"}
    assert main["livenessProbe"] and main["readinessProbe"]
    assert spec["automountServiceAccountToken"] is False


def test_daemonset_commands_parse_with_our_clis() -> None:
    # The manifest's flags must be flags our programs really have.
    from cdi.cli import build_parser
    from device_plugin.cli import parse_settings
    from nri_plugin.cli import build_parser as nri_parser

    spec = _daemonset()["spec"]["template"]["spec"]
    for init in spec["initContainers"]:
        build_parser().parse_args(init["command"][1:])
    main, device_plugin = spec["containers"]
    nri_parser().parse_args(main["command"][1:])
    nri_parser().parse_args(main["livenessProbe"]["exec"]["command"][1:])
    parse_settings(device_plugin["command"][1:])


def test_daemonset_installs_the_hook_on_the_node_and_generates_with_it() -> None:
    from cdi.cli import build_parser

    spec = _daemonset()["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["initContainers"]][:2] == ["install-hook", "generate"]
    install = build_parser().parse_args(_init(spec, "install-hook")["command"][1:])
    generate = build_parser().parse_args(_init(spec, "generate")["command"][1:])
    assert generate.hook_path == f"{install.prefix}/gpu-cdi-hook"
    # The node's directory is what the container writes under its view of the node's /.
    mounts = {m["mountPath"]: m for m in _init(spec, "install-hook")["volumeMounts"]}
    writable = mounts[install.host_root + install.prefix]
    assert not writable.get("readOnly")
    assert mounts[install.host_root]["readOnly"] is True
    volumes = {v["name"]: v["hostPath"] for v in spec["volumes"]}
    assert volumes[writable["name"]] == {"path": install.prefix, "type": "DirectoryOrCreate"}
    sc = _init(spec, "install-hook")["securityContext"]
    assert sc["capabilities"]["drop"] == ["ALL"] and sc["readOnlyRootFilesystem"] is True


def _units(tmp_path: Path) -> list[Path]:
    # systemd-analyze checks that ExecStart exists: point it at this venv's programs.
    out = []
    for unit in sorted((DEPLOY / "systemd").iterdir()):
        text = unit.read_text().replace("/usr/local/bin/", f"{BIN}/")
        dest = tmp_path / unit.name
        dest.write_text(text)
        out.append(dest)
    return out


def test_systemd_units_verify(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    need(tool is not None, "needs systemd-analyze (apt install systemd)")
    assert tool is not None
    units = _units(tmp_path)
    assert {u.name for u in units} == {
        "gpu-cdi-generate.service",
        "gpu-cdi-generate.path",
        "gpu-cdi-nri.service",
        "gpu-cdi-device-plugin.service",
    }
    out = subprocess.run(
        [tool, "verify", "--man=no", *map(str, units)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stderr.strip() == "", out.stderr


def test_systemd_verify_catches_a_bad_unit(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    need(tool is not None, "needs systemd-analyze (apt install systemd)")
    assert tool is not None
    unit = _units(tmp_path)[-1]
    unit.write_text(unit.read_text().replace("Restart=on-failure", "Restart=sometimes"))
    out = subprocess.run([tool, "verify", "--man=no", str(unit)], capture_output=True, text=True)
    assert "restart specifier" in out.stderr


@pytest.mark.parametrize(
    "unit", ["gpu-cdi-generate.service", "gpu-cdi-nri.service", "gpu-cdi-device-plugin.service"]
)
def test_unit_commands_parse_with_our_clis(unit: str) -> None:
    from cdi.cli import build_parser
    from device_plugin.cli import parse_settings
    from nri_plugin.cli import build_parser as nri_parser

    lines = [
        ln.split("=", 1)[1]
        for ln in (DEPLOY / "systemd" / unit).read_text().splitlines()
        if ln.startswith(("ExecStart=", "ExecStartPre="))
    ]
    assert lines
    for line in lines:
        argv = line.split()
        if argv[0].endswith("/gpu-cdi-device-plugin"):
            parse_settings(argv[1:])
            continue
        parser = build_parser() if argv[0].endswith("/gpu-cdi") else nri_parser()
        parser.parse_args(argv[1:])


def test_generate_unit_installs_the_hook_it_names() -> None:
    from cdi.cli import build_parser

    text = (DEPLOY / "systemd" / "gpu-cdi-generate.service").read_text().splitlines()
    pre = [ln.split("=", 1)[1].split() for ln in text if ln.startswith("ExecStartPre=")]
    start = [ln.split("=", 1)[1].split() for ln in text if ln.startswith("ExecStart=")]
    install = build_parser().parse_args(pre[0][1:])
    generate = build_parser().parse_args(start[0][1:])
    assert install.command == "install-hook"
    assert generate.hook_path == f"{install.prefix}/gpu-cdi-hook"
    writable = next(ln for ln in text if ln.startswith("ReadWritePaths=")).split("=", 1)[1]
    assert install.prefix in writable.split()
