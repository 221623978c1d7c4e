"""`gpu-cdi install-hook`: the path on stdout alone, atomic, idempotent, one line for every
directory or interpreter it cannot use; and `gpu-cdi generate` choosing and checking the hook.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from cdi.node.hookpath import FALLBACK, candidates, default_hook_path, missing_warning
from tests.node.support import (
    BIN,
    PROJECT,
    gpu_cdi,
    hook_paths,
    install_hook,
    one_line_error,
    read_only,
)
from tests.require import need

INVENTORY = "specs/inventories/dgx-a100.yaml"


def test_install_prints_the_path_and_a_second_run_changes_nothing(tmp_path: Path) -> None:
    hook = install_hook(tmp_path)
    assert hook == tmp_path / "gpu-cdi-hook"
    stamp = hook.stat().st_mtime_ns
    again = gpu_cdi(["install-hook", "--prefix", str(tmp_path)])
    assert again.returncode == 0 and again.stdout == f"{hook}\n"
    assert "unchanged, not rewritten" in again.stderr
    assert hook.stat().st_mtime_ns == stamp
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu-cdi-hook"]  # no temp file left


def test_install_replaces_an_old_hook_in_place(tmp_path: Path) -> None:
    old = tmp_path / "gpu-cdi-hook"
    old.write_text("#!/bin/sh\necho old\n")
    old.chmod(0o700)
    hook = install_hook(tmp_path)
    assert hook.read_bytes().startswith(b"#!/usr/bin/python3 -IS\n")
    assert hook.stat().st_mode & 0o7777 == 0o755


def test_missing_or_not_a_directory_prefix_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "opt" / "bin"
    one_line_error(
        gpu_cdi(["install-hook", "--prefix", str(missing)]),
        f"--prefix {missing}: no such directory",
    )
    assert not missing.exists()  # not created
    afile = tmp_path / "file"
    afile.write_text("")
    one_line_error(gpu_cdi(["install-hook", "--prefix", str(afile)]), "not a directory")
    one_line_error(gpu_cdi(["install-hook", "--prefix", "bin"]), "must be an absolute path")


def test_read_only_prefix_is_one_line(tmp_path: Path) -> None:
    target = tmp_path / "ro"
    target.mkdir()
    proc = read_only(target, [str(BIN / "gpu-cdi"), "install-hook", "--prefix", str(target)])
    one_line_error(proc, f"{target}/gpu-cdi-hook: cannot write the hook: Read-only file system")
    assert list(target.iterdir()) == []


def test_the_interpreter_must_exist_and_be_new_enough(tmp_path: Path) -> None:
    one_line_error(
        gpu_cdi(["install-hook", "--prefix", str(tmp_path), "--python", "/usr/bin/python9"]),
        "--python /usr/bin/python9: no such interpreter on the host",
    )
    old = tmp_path / "usr" / "bin" / "python3.9"
    old.parent.mkdir(parents=True)
    shutil.copy("/bin/true", old)
    (old.parent / "python3").symlink_to("python3.9")
    one_line_error(
        gpu_cdi(
            ["install-hook", "--prefix", str(tmp_path), "--python", str(old.parent / "python3")]
        ),
        "is Python 3.9; the hook needs >= 3.11",
    )
    assert not (tmp_path / "gpu-cdi-hook").exists()


def test_host_root_writes_under_it_and_prints_the_hosts_path(tmp_path: Path) -> None:
    # As in the DaemonSet: the node's / is mounted at /host in the init container.
    (tmp_path / "opt" / "gpu-cdi" / "bin").mkdir(parents=True)
    python = tmp_path / "usr" / "bin" / "python3"
    python.parent.mkdir(parents=True)
    shutil.copy("/bin/true", python)
    proc = gpu_cdi(["install-hook", "--host-root", str(tmp_path), "--prefix", "/opt/gpu-cdi/bin"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "/opt/gpu-cdi/bin/gpu-cdi-hook\n"
    written = tmp_path / "opt" / "gpu-cdi" / "bin" / "gpu-cdi-hook"
    assert written.read_bytes().startswith(b"#!/usr/bin/python3 -IS\n")
    one_line_error(
        gpu_cdi(
            [
                "install-hook",
                "--host-root",
                str(tmp_path),
                "--prefix",
                "/opt/gpu-cdi/bin",
                "--python",
                "/usr/bin/python3.12",
            ]
        ),
        f"looked at {tmp_path}/usr/bin/python3.12",
    )


def test_a_directory_others_can_write_is_warned_about(tmp_path: Path) -> None:
    tmp_path.chmod(0o777)
    proc = gpu_cdi(["install-hook", "--prefix", str(tmp_path)])
    assert proc.returncode == 0
    assert "writable by group or others" in proc.stderr.splitlines()[-1]
    tmp_path.chmod(0o1777)  # sticky, like /tmp: others cannot replace root's file
    proc = gpu_cdi(["install-hook", "--prefix", str(tmp_path)])
    assert "writable" not in proc.stderr


# -- the hook path `gpu-cdi generate` writes ----------------------------------------------------


def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_hook_path_order_beside_gpu_cdi_then_path_then_usr_bin(tmp_path: Path) -> None:
    venv, on_path = tmp_path / "venv" / "bin", tmp_path / "path"
    argv0, python = str(venv / "gpu-cdi"), str(tmp_path / "py" / "bin" / "python")
    search = f"{on_path}:relative/dir"
    assert candidates(argv0, python, search) == [
        str(venv / "gpu-cdi-hook"), str(on_path / "gpu-cdi-hook")]  # fmt: skip
    # python -m cdi: beside the interpreter, as pip installs the programs
    assert candidates("/x/cdi/__main__.py", python, search) == [
        str(tmp_path / "py/bin/gpu-cdi-hook"), str(on_path / "gpu-cdi-hook")]  # fmt: skip
    assert default_hook_path(argv0, python, search) == FALLBACK
    _executable(on_path / "gpu-cdi-hook")
    assert default_hook_path(argv0, python, search) == str(on_path / "gpu-cdi-hook")
    _executable(venv / "gpu-cdi-hook")
    assert default_hook_path(argv0, python, search) == str(venv / "gpu-cdi-hook")


def test_missing_hook_warning_looks_under_the_host_root(tmp_path: Path) -> None:
    hook = "/opt/gpu-cdi/bin/gpu-cdi-hook"
    said = missing_warning(hook, str(tmp_path))
    assert said == (
        f"warning: the hook {hook} does not exist on this host (looked at {tmp_path}{hook}): "
        "every container given this spec will fail to start; install it (gpu-cdi install-hook) "
        "or name it with --hook-path"
    )
    path = tmp_path / hook.lstrip("/")
    _executable(path).chmod(0o644)
    assert f"{hook} is not executable on this host" in str(missing_warning(hook, str(tmp_path)))
    path.chmod(0o755)
    assert missing_warning(hook, str(tmp_path)) is None
    assert missing_warning("/bin/sh") is None


def test_generate_names_the_hook_beside_it(tmp_path: Path) -> None:
    out = tmp_path / "nvidia.yaml"
    proc = gpu_cdi(["generate", "--inventory", INVENTORY, "--output", str(out)])
    assert proc.returncode == 0, proc.stderr
    assert hook_paths(out.read_text()) == {str(BIN / "gpu-cdi-hook")}
    assert "warning" not in proc.stderr


def test_a_missing_hook_is_warned_at_generate_time_unless_named(tmp_path: Path) -> None:
    # A gpu-cdi with no gpu-cdi-hook beside it and none on PATH names /usr/bin/gpu-cdi-hook.
    need(not os.path.exists(FALLBACK), f"{FALLBACK} exists on this machine")
    lonely = tmp_path / "bin"
    lonely.mkdir()
    shutil.copy(BIN / "gpu-cdi", lonely / "gpu-cdi")  # pip's script: the venv's interpreter
    out = tmp_path / "nvidia.yaml"
    argv = [str(lonely / "gpu-cdi"), "generate", "--inventory", INVENTORY, "--output", str(out)]
    env = {"PATH": f"{lonely}:/usr/bin:/bin"}
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=PROJECT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert hook_paths(out.read_text()) == {FALLBACK}
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning")]
    assert warnings == [
        f"warning: the hook {FALLBACK} does not exist on this host: every container given this "
        "spec will fail to start; install it (gpu-cdi install-hook) or name it with --hook-path"
    ]
    # Named by the operator: taken as said, as nvidia-ctk takes --nvidia-cdi-hook-path.
    named = subprocess.run(
        [*argv, "--hook-path", "/opt/elsewhere/gpu-cdi-hook"],
        capture_output=True, text=True, env=env, cwd=PROJECT, timeout=120,
    )  # fmt: skip
    assert named.returncode == 0 and "warning" not in named.stderr
    assert hook_paths(out.read_text()) == {"/opt/elsewhere/gpu-cdi-hook"}
