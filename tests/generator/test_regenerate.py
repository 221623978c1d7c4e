"""In-process regeneration (`cdi.nvidia.generate.regenerate`), as the device plugin and the NRI
plugin call it: the same spec as `gpu-cdi generate`, written only when it changed, one-line
errors and nothing written on failure.

The calls run in a child process of their own: NVML (the fake library included) is process
state, and other tests of this session leave theirs behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.generator.hosts import ROOT, Hosts, gpu_cdi, host_args

# Runs in the child: argv = driver root, dev root, proc/sys root, hook path, work dir.
CALLS = """
import json, os, sys
from cdi.nvidia.build import Options
from cdi.nvidia.generate import GenerateError, regenerate
from cdi.nvidia.roots import Roots

driver, dev, proc_sys, hook, work = sys.argv[1:]
roots = Roots(driver, dev, proc_sys_root=proc_sys)
options = Options(hook_path=hook)
path = os.path.join(work, "cdi", "nvidia.yaml")
out = {"generated": regenerate(roots, options)._asdict()}
out["first"] = regenerate(roots, options, path).written
out["again"] = regenerate(roots, options, path).written
out["old"] = regenerate(roots, options, path, version="0.5.0")._asdict()
bad = os.path.join(work, "bad")
os.mkdir(bad)
calls = {
    "no driver": lambda: regenerate(Roots(driver_root=bad), options),
    "extension": lambda: regenerate(roots, options, os.path.join(bad, "nvidia.yml")),
    "device id": lambda: regenerate(roots, options._replace(device_ids=("99",)), bad + "/a.yaml"),
    "hook path": lambda: regenerate(roots, options._replace(hook_path="rel/hook"), bad + "/b.yaml"),
}
out["errors"] = {}
for name, call in calls.items():
    try:
        call()
    except GenerateError as error:
        out["errors"][name] = str(error)
out["left in bad"] = os.listdir(bad)
print(json.dumps(out))
"""


def test_regenerate_in_process(hosts: Hosts, tmp_path: Path) -> None:
    host = hosts.get("dgx-a100-mig")
    hook = "/opt/gpu-cdi/bin/gpu-cdi-hook"  # the command's default depends on PATH
    command = gpu_cdi(["generate", *host_args(host), "--hook-path", hook], host)
    assert command.returncode == 0, command.stderr
    roots = [str(host.driver_root), str(host.dev_root), str(host.proc_sys_root)]
    child = subprocess.run(
        [sys.executable, "-c", CALLS, *roots, hook, str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, **host.env},
        cwd=ROOT,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr
    out: dict[str, Any] = json.loads(child.stdout)

    generated = out["generated"]
    assert generated["text"] == command.stdout
    assert generated["notes"] == [] and generated["written"] is False
    assert generated["advice"] == [command.stderr.strip()]

    path = tmp_path / "cdi" / "nvidia.yaml"
    assert out["first"] is True and out["again"] is False
    old = out["old"]
    assert old["written"] is True and old["text"] == path.read_text()
    assert "additionalGids" not in old["text"] and 'cdiVersion: "0.5.0"' in old["text"]
    assert any("has no additionalGids" in line for line in old["advice"])
    assert oct(path.stat().st_mode & 0o777) == "0o644"

    errors = out["errors"]
    assert "libnvidia-ml.so.1 was not found" in errors["no driver"]
    assert "must end in .yaml or .json" in errors["extension"]
    assert "no such GPU or MIG device" in errors["device id"]
    assert "invalid hook path" in errors["hook path"]
    assert all("\n" not in message for message in errors.values())
    assert out["left in bad"] == []
