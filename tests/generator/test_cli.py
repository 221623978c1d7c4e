"""`gpu-cdi generate` as a user runs it: outputs, --check, versions, and every bad input."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from tests.generator.hosts import INVENTORIES, TOPOLOGIES, Hosts, gpu_cdi, host_args
from tests.require import need

DGX = str(INVENTORIES / "dgx-a100.yaml")


def _need_inventory() -> None:
    need(Path(DGX).is_file(), f"{DGX} not shipped yet")


def _error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("gpu-cdi generate: error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_readme_first_command_is_deterministic() -> None:
    _need_inventory()
    first = gpu_cdi(["generate", "--inventory", DGX])
    second = gpu_cdi(["generate", "--inventory", DGX])
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    spec = yaml.safe_load(first.stdout)
    assert spec["kind"] == "nvidia.com/gpu" and spec["cdiVersion"] == "0.7.0"
    (note,) = first.stderr.strip().splitlines()
    assert note.startswith("note: this spec needs cdiVersion 0.7.0 (additionalGids")
    assert "--cdi-version 0.5.0" in note


def test_cdi_version_0_5_0_for_podman_4(tmp_path: Path) -> None:
    _need_inventory()
    out = tmp_path / "nvidia.yaml"
    proc = gpu_cdi(["generate", "--inventory", DGX, "--cdi-version", "0.5.0", "--output", str(out)])
    assert proc.returncode == 0, proc.stderr
    spec = yaml.safe_load(out.read_text())
    assert spec["cdiVersion"] == "0.5.0"
    assert "additionalGids" not in out.read_text()
    notes = [line for line in proc.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "additionalGids" in notes[0] and "44, 105" in notes[0]


def test_output_written_once_then_unchanged_then_checked(tmp_path: Path) -> None:
    _need_inventory()
    out = tmp_path / "cdi" / "nvidia.json"
    args = ["generate", "--inventory", DGX, "--output", str(out)]
    assert gpu_cdi(args).returncode == 0
    assert oct(out.stat().st_mode & 0o777) == "0o644"
    assert out.read_text().startswith("{")
    before = out.stat()
    proc = gpu_cdi(args)
    assert proc.returncode == 0 and "unchanged, not rewritten" in proc.stderr
    after = out.stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
    assert gpu_cdi([*args, "--check"]).returncode == 0
    # The host changed (here: another naming), so the file on disk is stale.
    stale = gpu_cdi([*args, "--check", "--device-name-strategy", "uuid"])
    assert stale.returncode == 1
    assert "stale" in stale.stderr and stale.stdout.startswith("--- ")
    assert '-          "name": "0",' in stale.stdout or '"name": "0"' in stale.stdout
    assert out.stat().st_mtime_ns == before.st_mtime_ns
    missing = gpu_cdi([*args[:-1], str(tmp_path / "none.yaml"), "--check"])
    assert missing.returncode == 1 and "missing" in missing.stderr


def test_missing_extension_is_appended(tmp_path: Path) -> None:
    _need_inventory()
    proc = gpu_cdi(["generate", "--inventory", DGX, "--output", str(tmp_path / "nvidia")])
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "nvidia.yaml").is_file()


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--vendor", "nvidia com"], "vendor"),
        (["--class=-gpu"], "class"),
        (["--device-id", "42"], "--device-id '42'"),
        (["--device-id", "none", "--device-id", "1"], "conflicts"),
        (["--format", "json", "--output", "{tmp}/x.yaml"], "conflicts with --output"),
        (["--enable-hook", "all"], "--enable-hook all"),
        (["--disable-hook", "frobnicate"], "unknown hook 'frobnicate'"),
        (["--cdi-version", "0.9.0"], "--cdi-version '0.9.0'"),
        (["--cdi-version", "0.4.0"], "needs at least 0.5.0"),
        (["--device-name-strategy", "serial"], "unknown device name strategy 'serial'"),
        (["--host-root", "/"], "--inventory conflicts with --host-root"),
        (["--output", "{tmp}/file/nvidia.yaml"], "cannot write"),
        (["--check"], "--check needs --output"),
        (["--driver-root", "relative/dir"], "must be an absolute path"),
    ],
)
def test_bad_input_is_one_clear_line_and_nothing_written(
    tmp_path: Path, flags: list[str], says: str
) -> None:
    _need_inventory()
    (tmp_path / "file").write_text("a file, not a directory")
    flags = [f.replace("{tmp}", str(tmp_path)) for f in flags]
    proc = gpu_cdi(["generate", "--inventory", DGX, *flags])
    assert proc.returncode == 2, proc.stderr
    assert says in _error_line(proc.stderr)
    assert proc.stdout == ""
    assert sorted(os.listdir(tmp_path)) == ["file"]


def test_bad_inventory_file(tmp_path: Path) -> None:
    bad = tmp_path / "inv.yaml"
    bad.write_text("inventory: 2\ndriverVersion: 550\nend: true\n")
    line = _error_line(gpu_cdi(["generate", "--inventory", str(bad)]).stderr)
    assert f"{bad}: inventory.driverVersion: expected a string, got integer 550" in line
    line = _error_line(gpu_cdi(["generate", "--inventory", str(tmp_path / "nope.yaml")]).stderr)
    assert "cannot read the inventory" in line


def test_no_driver_says_where_and_what_to_do(tmp_path: Path) -> None:
    proc = gpu_cdi(["generate", "--driver-root", str(tmp_path)])
    assert proc.returncode == 2
    line = _error_line(proc.stderr)
    assert f"libnvidia-ml.so.1 was not found under the driver root {tmp_path}" in line
    assert "--inventory FILE" in line


def test_lost_gpu_is_named_and_left_out(hosts: Hosts, tmp_path: Path) -> None:
    topology = tmp_path / "lost.yaml"
    text = (TOPOLOGIES / "dgx-a100.yaml").read_text().replace("name: dgx-a100\n", "name: lost\n")
    topology.write_text(
        text + "errors:\n  - {call: nvmlDeviceGetUUID, error: GPU_IS_LOST, device: 3}\n"
    )
    from gpu_cdi_fakehost.builder import build_host

    hosts.get("dgx-a100")  # root and the fake host package
    host = build_host(str(topology), tmp_path / "host")
    proc = gpu_cdi(["generate", *host_args(host)], host)
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1
    assert warnings[0].startswith("warning: GPU 3 (UUID unknown, 0000:4e:00.0) left out:")
    assert "GPU is lost" in warnings[0] or "Lost" in warnings[0]
    names = [d["name"] for d in yaml.safe_load(proc.stdout)["devices"]]
    assert "3" not in names and "2" in names and "4" in names
    strict = gpu_cdi(["generate", *host_args(host), "--strict"], host)
    assert strict.returncode == 2 and "--strict" in strict.stderr and strict.stdout == ""


def test_inventory_command_errors_and_output(hosts: Hosts, tmp_path: Path) -> None:
    proc = gpu_cdi(["inventory", "--driver-root", str(tmp_path)])
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("gpu-cdi inventory: error: libnvidia-ml.so.1 was not found")
    host = hosts.get("dgx-a100")
    out = tmp_path / "inv.yaml"
    proc = gpu_cdi(["inventory", *host_args(host), "--output", str(out)], host)
    assert proc.returncode == 0, proc.stderr
    assert 'driverVersion: "550.163.01"' in out.read_text()
    # Management mode needs no NVML: the version comes from the driver's file names.
    proc = gpu_cdi(["inventory", *host_args(host), "--mode", "management"])
    assert proc.returncode == 0, proc.stderr
    assert "gpus: []" in proc.stdout


def test_check_reads_content_not_layout(tmp_path: Path) -> None:
    """A spec with the same content laid out differently (other indentation, key order,
    JSON in a .yaml file) is up to date; a changed value is not."""
    _need_inventory()
    out = tmp_path / "nvidia.yaml"
    args = ["generate", "--inventory", DGX, "--output", str(out)]
    assert gpu_cdi(args).returncode == 0
    data = yaml.safe_load(out.read_text())
    out.write_text(yaml.safe_dump(data, indent=4, sort_keys=True))
    proc = gpu_cdi([*args, "--check"])
    assert proc.returncode == 0 and "laid out differently" in proc.stderr
    data["containerEdits"]["env"][0] = "NVIDIA_CTK_LIBCUDA_DIR=/usr/lib64"
    out.write_text(yaml.safe_dump(data))
    proc = gpu_cdi([*args, "--check"])
    assert proc.returncode == 1
    changed = [line for line in proc.stdout.splitlines() if line[:1] in "+-"]
    assert changed == [
        f"--- {out} (on disk)",
        f"+++ {out} (this host now)",
        "-    - NVIDIA_CTK_LIBCUDA_DIR=/usr/lib64",
        "+    - NVIDIA_CTK_LIBCUDA_DIR=/usr/lib/x86_64-linux-gnu",
    ]


@pytest.mark.parametrize(
    ("call", "error", "says"),
    [
        ("nvmlInit", "DRIVER_NOT_LOADED", "failed to initialise"),
        ("nvmlDeviceGetCount", "UNKNOWN", "NVML cannot count the GPUs"),
        ("nvmlSystemGetDriverVersion", "UNKNOWN", "NVML cannot tell the driver version"),
    ],
)
def test_nvml_failing_as_a_whole(
    hosts: Hosts, tmp_path: Path, call: str, error: str, says: str
) -> None:
    hosts.get("dgx-a100")  # root and the fake host package
    from gpu_cdi_fakehost.builder import build_host

    topology = tmp_path / "broken.yaml"
    text = (TOPOLOGIES / "dgx-a100.yaml").read_text().replace("name: dgx-a100\n", "name: x\n")
    topology.write_text(text + f"errors:\n  - {{call: {call}, error: {error}}}\n")
    host = build_host(str(topology), tmp_path / "host")
    proc = gpu_cdi(["generate", *host_args(host)], host)
    assert proc.returncode == 2 and proc.stdout == ""
    assert says in _error_line(proc.stderr)


@pytest.mark.parametrize(
    ("setup", "said"),
    [
        ("", "out err"),  # nothing left to run: ends at once, output flushed
        ("import atexit; atexit.register(lambda: print('atexit ran'))", "out err atexit ran"),
        (
            "import threading, time; "
            "threading.Thread(target=lambda: (time.sleep(0.2), print('thread ran'))).start()",
            "out err thread ran",
        ),
    ],
)
def test_end_skips_teardown_only_when_nothing_is_left(setup: str, said: str) -> None:
    """`gpu-cdi` leaves without the interpreter's teardown only when no atexit callback and
    no other thread would still run; its buffered output is written either way."""
    import subprocess
    import sys

    code = (
        f"{setup}\nimport sys\nsys.stdout.write('out ')\nsys.stderr.write('err ')\n"
        "from cdi.cli import end\nend(3)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 3
    assert sorted(f"{done.stdout} {done.stderr}".split()) == sorted(said.split())


def test_end_with_stderr_closed_at_start() -> None:
    """A program started with stderr closed has sys.stderr None: end still writes stdout and
    exits with the code."""
    import subprocess
    import sys

    code = "import sys\nprint('out')\nfrom cdi.cli import end\nend(5)\n"
    done = subprocess.run(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        check=False,
        timeout=60,
        preexec_fn=lambda: os.close(2),
    )
    assert (done.returncode, done.stdout) == (5, "out\n")
