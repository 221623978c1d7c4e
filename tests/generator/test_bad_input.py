"""`gpu-cdi generate` and `gpu-cdi inventory` on bad input (issue 15): one line, exit code 2,
nothing written or left behind, within a second. And what must not go wrong silently: a spec
with no devices over a good one, the kinds of other modes, symlinked outputs, stale temp files.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.bad_input import WRITE_ERRORS, broken_stdout, gpu_cdi, one_line, run_briefly
from tests.generator.hosts import INVENTORIES, Hosts, host_args

INVENTORY = str(INVENTORIES / "dgx-a100.yaml")  # 8 GPUs, 2 IMEX channels
GENERATE = ("generate", "--inventory", INVENTORY)


def _generate(tmp_path: Path, *flags: str) -> tuple[int, str, str]:
    proc = run_briefly(gpu_cdi(*GENERATE, *flags), cwd=tmp_path)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--output", "/dev/null"], "--output /dev/null: is a character device, not a file"),
        (["--output", "{tmp}/dir"], "--output {tmp}/dir: is a directory, not a file"),
        (["--output", "{tmp}/dir/"], "--output {tmp}/dir/: names a directory (it ends in '/')"),
        (["--output", "{tmp}/new/"], "--output {tmp}/new/: names a directory (it ends in '/')"),
        (["--output", "{tmp}/fifo.yaml"], "--output {tmp}/fifo.yaml: is a FIFO, not a file"),
        (["--output", "{tmp}/fifo"], "--output {tmp}/fifo: is a FIFO, not a file"),
        (["--output", "{tmp}/loop.yaml"], "--output {tmp}/loop.yaml: Too many levels of symbolic"),
        (
            ["--output", "{tmp}/file/n.yaml"],
            "{tmp}/file/n.yaml: cannot write the spec: {tmp}/file is not a directory",
        ),
        (
            ["--output", "{tmp}/file/a/n.yaml"],
            "cannot write the spec: {tmp}/file is not a directory",
        ),
        (["--output", ""], "--output '': empty (leave the flag out for its default)"),
        (["--hook-path", ""], "--hook-path '': empty (leave the flag out for its default)"),
        (["--device-id", ""], "--device-id '': an empty item"),
        (["--device-id", "0,,1"], "--device-id '0,,1': an empty item"),
        (["--device-name-strategy", ""], "--device-name-strategy '': an empty item"),
        (["--check", "--output", "-"], "--check needs --output FILE"),
    ],
)
def test_outputs_and_empty_values(tmp_path: Path, flags: list[str], says: str) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("a file")
    os.mkfifo(tmp_path / "fifo.yaml")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "loop.yaml").symlink_to("loop.yaml")
    before = sorted(os.listdir(tmp_path))
    flags = [flag.replace("{tmp}", str(tmp_path)) for flag in flags]
    proc = run_briefly(gpu_cdi(*GENERATE, *flags), cwd=tmp_path)
    assert (proc.returncode, proc.stdout) == (2, "")
    line = one_line(proc)
    assert line.startswith("gpu-cdi generate: error: ")
    assert says.replace("{tmp}", str(tmp_path)) in line
    assert sorted(os.listdir(tmp_path)) == before
    assert os.listdir(tmp_path / "dir") == []
    assert not os.path.lexists("/dev/null.yaml")


def _cut(lines: int) -> Callable[[str], str]:
    return lambda text: "".join(text.splitlines(keepends=True)[:lines])


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (_cut(4), "inventory: no 'end: true' at the end: the file is cut short"),  # before gpus:
        (_cut(200), "inventory: no 'end: true' at the end: the file is cut short"),
        (lambda text: text[: text.index("end: true")], "no 'end: true' at the end"),
        (lambda text: text.replace("end: true", "end: tr"), "inventory.end: expected true or"),
        (lambda text: text.replace("end: true", "end: false"), "inventory.end: expected true"),
        (lambda text: text.replace("inventory: 2", "inventory: 1"), "format 1 is not supported"),
        (
            lambda text: text.replace('mode: "0666"', "mode: 0666", 1),
            '].mode: expected octal permission bits as a string such as "0666", got '
            "integer 438 (quote the digits)",
        ),
        (
            lambda text: text.replace("minor: 0\n", "minor: 99999999999999999999999\n", 1),
            "gpus[0].minor: expected a non-negative integer, got integer "
            "99999999999999999999999 (beyond 64 bits)",
        ),
        (lambda text: "\0\1binary", "not a YAML inventory"),
    ],
)
def test_a_damaged_inventory_is_refused(
    tmp_path: Path, change: Callable[[str], str], says: str
) -> None:
    damaged = tmp_path / "inventory.yaml"
    damaged.write_text(change(Path(INVENTORY).read_text()))
    out = tmp_path / "nvidia.yaml"
    proc = run_briefly(gpu_cdi("generate", "--inventory", str(damaged), "--output", str(out)))
    assert (proc.returncode, proc.stdout) == (2, "")
    assert one_line(proc).startswith(f"gpu-cdi generate: error: {damaged}: ")
    assert says in proc.stderr
    assert sorted(os.listdir(tmp_path)) == ["inventory.yaml"]


@pytest.mark.parametrize("kind", ["FIFO", "directory"])
def test_an_inventory_that_is_not_a_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "inventory.yaml"
    os.mkfifo(path) if kind == "FIFO" else path.mkdir()
    proc = run_briefly(gpu_cdi("generate", "--inventory", str(path)))
    assert (proc.returncode, proc.stdout) == (2, "")
    assert one_line(proc) == (
        f"gpu-cdi generate: error: {path}: cannot read the inventory: not a regular file (a {kind})"
    )
    proc = run_briefly(gpu_cdi("generate", "--inventory", ""))
    assert one_line(proc) == (
        "gpu-cdi generate: error: --inventory '': empty (leave the flag out for its default)"
    )


def test_dash_is_stdout(tmp_path: Path) -> None:
    code, out, _ = _generate(tmp_path, "--output", "-")
    assert code == 0 and yaml.safe_load(out)["kind"] == "nvidia.com/gpu"
    assert os.listdir(tmp_path) == []


def test_a_symlinked_output_is_followed(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "spec.yaml").write_text("old\n")
    link = tmp_path / "nvidia.yaml"
    link.symlink_to("real/spec.yaml")
    code, _, err = _generate(tmp_path, "--output", str(link))
    assert code == 0, err
    assert os.readlink(link) == "real/spec.yaml"
    assert yaml.safe_load((tmp_path / "real" / "spec.yaml").read_text())["kind"] == "nvidia.com/gpu"
    assert os.listdir(tmp_path / "real") == ["spec.yaml"]


def test_no_devices_never_replace_some(tmp_path: Path) -> None:
    spec = tmp_path / "nvidia.yaml"
    assert _generate(tmp_path, "--output", str(spec))[0] == 0
    before = spec.read_text()
    empty = ("--output", str(spec), "--device-id", "none", "--no-all-device")
    code, out, err = _generate(tmp_path, *empty)
    assert (code, out) == (2, "")
    assert err == (
        f"gpu-cdi generate: error: the new spec has no devices: not replacing {spec}, which "
        "has 17 (--allow-empty replaces it)\n"
    )
    assert spec.read_text() == before and os.listdir(tmp_path) == ["nvidia.yaml"]
    code, _, err = _generate(tmp_path, *empty, "--allow-empty")
    assert code == 0, err
    assert yaml.safe_load(spec.read_text())["devices"] == []
    # Nothing to lose: a spec without devices replaces one without devices, or none at all.
    assert _generate(tmp_path, *empty)[0] == 0
    assert _generate(tmp_path, "--output", str(tmp_path / "new.yaml"), *empty[2:])[0] == 0


def test_other_modes_default_to_kinds_of_their_own(tmp_path: Path) -> None:
    kinds = {}
    for mode in ("nvml", "imex", "management"):
        spec = tmp_path / f"{mode}.yaml"
        code, _, err = _generate(tmp_path, "--mode", mode, "--output", str(spec))
        assert code == 0 and "warning" not in err, err
        kinds[mode] = yaml.safe_load(spec.read_text())["kind"]
    assert kinds == {
        "nvml": "nvidia.com/gpu",
        "imex": "nvidia.com/imex-channel",
        "management": "management.nvidia.com/gpu",
    }
    listing = run_briefly(gpu_cdi("list", "--spec-dir", str(tmp_path)))
    assert listing.returncode == 0 and listing.stderr == ""
    assert "nvidia.com/imex-channel=all" in listing.stdout
    assert "nvidia.com/gpu=all" in listing.stdout


def test_a_conflicting_spec_beside_the_output_is_named(tmp_path: Path) -> None:
    gpus = tmp_path / "nvidia.yaml"
    assert _generate(tmp_path, "--output", str(gpus))[0] == 0
    imex = tmp_path / "imex.yaml"
    code, _, err = _generate(tmp_path, "--mode", "imex", "--class", "gpu", "--output", str(imex))
    assert code == 0
    (warning,) = [line for line in err.splitlines() if line.startswith("warning:")]
    assert warning == (
        f"warning: {gpus} also defines nvidia.com/gpu=0, nvidia.com/gpu=1, nvidia.com/gpu=all: "
        "CDI registries drop these devices from both files as conflicts (give one spec another "
        "--vendor/--class, or remove one)"
    )


def test_temp_files_a_killed_generate_left_are_removed(tmp_path: Path) -> None:
    spec = tmp_path / "nvidia.yaml"
    (tmp_path / ".nvidia.yaml.0123abcd.tmp").write_text("half a spec")
    (tmp_path / ".other.yaml.0123abcd.tmp").write_text("not ours")
    assert _generate(tmp_path, "--output", str(spec))[0] == 0
    assert sorted(os.listdir(tmp_path)) == [".other.yaml.0123abcd.tmp", "nvidia.yaml"]


@pytest.mark.parametrize("kind", sorted(WRITE_ERRORS))
def test_inventory_to_a_failing_stdout(hosts: Hosts, kind: str) -> None:
    host = hosts.get("workstation")
    with broken_stdout(kind) as fd:
        proc = run_briefly(gpu_cdi("inventory", *host_args(host)), stdout=fd, env=host.env)
    assert proc.returncode == 2
    assert one_line(proc) == f"gpu-cdi: error: cannot write to stdout: {WRITE_ERRORS[kind]}"


def test_inventory_outputs(hosts: Hosts, tmp_path: Path) -> None:
    host = hosts.get("workstation")
    for output, says in [
        ("/dev/null", "gpu-cdi inventory: error: /dev/null: is a character device, not a file"),
        (f"{tmp_path}/", f"gpu-cdi inventory: error: {tmp_path}/: names a directory"),
        ("", "gpu-cdi inventory: error: --output '': empty"),
    ]:
        argv = gpu_cdi("inventory", *host_args(host), "--output", output)
        proc = run_briefly(argv, env=host.env)
        assert (proc.returncode, proc.stdout) == (2, "")
        assert one_line(proc).startswith(says)
    assert os.listdir(tmp_path) == []
    proc = run_briefly(gpu_cdi("inventory", *host_args(host), "--output", "-"), env=host.env)
    assert proc.returncode == 0 and proc.stdout.endswith("\nend: true\n")
