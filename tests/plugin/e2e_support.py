"""Helpers for the plugin's end-to-end tests: a spec from `gpu-cdi generate` on a fake host,
the plugin (`python -m nri_plugin.cli`) as a process attached to a containerd, and the
normalisation used to compare containerd's OCI spec with the reference library's injection.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

PROJECT = Path(__file__).resolve().parents[2]
HOOK_PROGRAM = str(Path(sys.executable).parent / "gpu-cdi-hook")
TOPOLOGY = "dgx-a100"  # 8 GPUs, driver 550.163.01
LIBDIR = "/usr/lib/x86_64-linux-gnu"


def build_fake_host(tmp_path_factory: Any, label: str) -> Any:
    """The fake 8-GPU host (driver files, device nodes made with mknod), for a module fixture."""
    from tests.require import need, need_root

    need_root()
    try:
        from gpu_cdi_fakehost.builder import build_host
    except ImportError:
        need(False, "gpu_cdi_fakehost is not installed (pip install -e tests/fakehost)")
        raise
    return build_host(TOPOLOGY, tmp_path_factory.mktemp(label))


def generate_spec(host: Any, output: Path, *extra: str) -> dict[str, Any]:
    """Run `gpu-cdi generate` for the fake `host` into `output`; returns the spec data."""
    argv = [sys.executable, "-m", "cdi", *host.generate_argv[1:]]
    argv += ["--hook-path", HOOK_PROGRAM, "--output", str(output), *extra]
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
    data: dict[str, Any] = yaml.safe_load(output.read_text())
    return data


class PluginProcess:
    """`gpu-cdi-nri` attached to a containerd's NRI socket, its log in a file."""

    def __init__(
        self,
        containerd: Any,
        spec_dirs: Sequence[Path],
        log_path: Path,
        *,
        idx: str = "50",
        name: str = "gpu-cdi-test",
        extra: Sequence[str] = (),
    ) -> None:
        self.containerd = containerd
        self.name = name
        self.log_path = log_path
        self.extra = tuple(extra)
        argv = [sys.executable, "-m", "nri_plugin.cli", "--socket", containerd.nri_socket]
        for directory in spec_dirs:
            argv += ["--spec-dir", str(directory)]
        argv += ["--plugin-name", name, "--plugin-idx", idx, "--log-level", "debug", *extra]
        since = containerd.log_size()
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, cwd=PROJECT, start_new_session=True
            )
        try:
            containerd.wait_plugin_connected(name, since=since, timeout=20)
        except Exception:
            self.stop()
            raise AssertionError(f"plugin did not connect; its log:\n{self.log()}") from None

    def flag(self, name: str) -> str:
        """The value this plugin was given for an extra flag."""
        return self.extra[self.extra.index(name) + 1]

    def log(self) -> str:
        """The plugin's output so far."""
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 5.0) -> None:
        """Wait until the plugin logged `text`."""
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if time.monotonic() > deadline:
                raise AssertionError(f"plugin never logged {text!r}; log:\n{self.log()}")
            time.sleep(0.02)

    def stop(self) -> int:
        """SIGTERM and wait; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


@contextlib.contextmanager
def attached(
    containerd: Any, spec_dirs: Sequence[Path], log_path: Path, **kw: Any
) -> Iterator[PluginProcess]:
    """A PluginProcess for the duration of a `with` block."""
    plugin = PluginProcess(containerd, spec_dirs, log_path, **kw)
    try:
        yield plugin
    finally:
        plugin.stop()


def device_paths(oci: Mapping[str, Any]) -> list[str]:
    """Paths of linux.devices."""
    return [d["path"] for d in oci.get("linux", {}).get("devices") or ()]


def hook_args(oci: Mapping[str, Any], stage: str = "createContainer") -> list[list[str]]:
    """Args of the hooks of one stage."""
    return [h.get("args", []) for h in (oci.get("hooks") or {}).get(stage, [])]


def env_values(oci: Mapping[str, Any], name: str) -> list[str]:
    """Every value `name` has in process.env, in order."""
    prefix = name + "="
    return [e[len(prefix) :] for e in oci["process"]["env"] if e.startswith(prefix)]


def comparable(oci: Mapping[str, Any], drop_env: Sequence[str] = ()) -> dict[str, Any]:
    """An OCI spec with the documented differences between containerd's application of an NRI
    adjustment and the reference library's injection taken out (docs/nri-plugin.md):

    - device cgroup rules: NRI grants `rw` (`rwm` for block devices) and adds one rule per
      device; the reference uses the spec's permissions and repeats rules for repeated
      devices: compared as a set of (allow, type, major, minor);
    - mounts: NRI sorts by depth only, the 0.8 reference breaks ties alphabetically: compared
      in (depth, destination) order;
    - env variables named in `drop_env` (NVIDIA_VISIBLE_DEVICES: we replace it with `void`, the
      reference appends the spec's value after the original one);
    - process.user.additionalGids (no NRI field);
    - container-specific fields (annotations, cgroupsPath, hostname).
    """
    out = dict(oci)
    process = dict(out["process"])
    process["env"] = [e for e in process.get("env", []) if e.split("=", 1)[0] not in drop_env]
    user = dict(process.get("user") or {})
    user.pop("additionalGids", None)
    process["user"] = user
    out["process"] = process
    out.pop("annotations", None)
    out.pop("hostname", None)
    linux = dict(out.get("linux") or {})
    linux.pop("cgroupsPath", None)
    resources = dict(linux.get("resources") or {})
    rules = resources.get("devices") or []
    resources["devices"] = sorted(
        {(r.get("allow"), r.get("type"), r.get("major"), r.get("minor")) for r in rules},
        key=repr,
    )
    linux["resources"] = resources
    out["linux"] = linux
    out["mounts"] = sorted(
        out.get("mounts") or [],
        key=lambda m: (os.path.normpath(m["destination"]).count("/"), m["destination"]),
    )
    return out
