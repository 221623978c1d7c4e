"""The hook as a process: bad input gives one line naming path and reason, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hook.helpers import (
    HOOK_MAIN,
    LIBDIR,
    assert_one_line_error,
    hook_argv,
    make_bundle,
    run_hook,
)

LINK = f"libcuda.so.1::{LIBDIR}/libcuda.so"


@pytest.mark.parametrize("form", ["fast", "module", "script"])
def test_every_invocation_form_works(tmp_path: Path, form: str) -> None:
    bundle = make_bundle(tmp_path)
    proc = run_hook(bundle, "create-symlinks", "--link", LINK, form=form)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    assert (bundle.rootfs / LIBDIR.lstrip("/") / "libcuda.so").readlink() == Path("libcuda.so.1")


def test_fast_form_ignores_python_environment_and_cwd(tmp_path: Path) -> None:
    """-I: PYTHONPATH and a `cdi` package in the working directory (the rootfs) are ignored."""
    bundle = make_bundle(tmp_path)
    trap = tmp_path / "trap" / "cdi"
    trap.mkdir(parents=True)
    (trap / "__init__.py").write_text("raise SystemExit('imported from the image')\n")
    proc = subprocess.run(
        [sys.executable, "-I", "-S", HOOK_MAIN, "create-symlinks", "--link", LINK],
        input=bundle.state,
        capture_output=True,
        cwd=trap.parent,
        env={"PYTHONPATH": str(trap.parent), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_help_and_version(tmp_path: Path) -> None:
    proc = run_hook(None, "--help")
    assert proc.returncode == 0 and "create-symlinks --link TARGET::LINK" in proc.stdout
    proc = run_hook(None, "--version")
    assert proc.returncode == 0 and proc.stdout.startswith("gpu-cdi-hook ")


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        ([], ["no action given"]),
        (["frobnicate"], ["unknown action 'frobnicate'", "--help"]),
        (["create-symlinks", "--force"], ["create-symlinks: unknown flag --force"]),
        (["update-ldcache", "--folder"], ["update-ldcache: flag --folder needs a value"]),
        (["chmod", "--mode", "7a5", "--path", "/dev"], ["--mode '7a5'"]),
    ],
)
def test_usage_errors_exit_2_before_reading_state(args: list[str], needles: list[str]) -> None:
    proc = run_hook(None, *args, stdin=b"")
    assert_one_line_error(proc, *needles)
    assert proc.returncode == 2


@pytest.mark.parametrize(
    ("stdin", "needles"),
    [
        (b"", ["OCI state on stdin: empty"]),
        (b"{not json", ["OCI state on stdin: not valid JSON"]),
        (b'"a string"', ["expected a JSON object, got str"]),
        (b'{"id": "c1"}', ["field 'bundle' missing"]),
        (
            b'{"bundle": "/nonexistent/bundle"}',
            ["create-symlinks:", "/nonexistent/bundle/config.json: cannot read: No such file"],
        ),
    ],
)
def test_bad_state_is_one_line(stdin: bytes, needles: list[str]) -> None:
    proc = run_hook(None, "create-symlinks", "--link", LINK, stdin=stdin)
    assert_one_line_error(proc, *needles)
    assert proc.returncode == 1


def test_missing_rootfs_is_named(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path)
    config = {"root": {"path": "gone"}}
    (bundle.path / "config.json").write_text(json.dumps(config))
    proc = run_hook(bundle, "create-symlinks", "--link", LINK)
    assert_one_line_error(proc, f"{bundle.path}/gone is not a directory", "config.json")


def test_action_errors_name_action_path_and_reason(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path)
    (bundle.rootfs / "usr/lib").joinpath("x86_64-linux-gnu").rmdir()
    (bundle.rootfs / "usr/lib/x86_64-linux-gnu").write_text("a file")
    proc = run_hook(bundle, "create-symlinks", "--link", LINK)
    assert_one_line_error(
        proc,
        "create-symlinks:",
        f"{LIBDIR}/libcuda.so",
        str(bundle.rootfs),
        f"{LIBDIR} is not a directory",
    )


def test_first_failing_action_stops_the_chain(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path)
    (bundle.rootfs / "dev").write_text("a file where the image should have a directory")
    proc = run_hook(
        bundle,
        "chmod", "--mode", "755", "--path", "/dev/dri",
        "create-symlinks", "--link", LINK,
    )  # fmt: skip
    assert_one_line_error(proc, "chmod: /dev/dri", "/dev is not a directory")
    assert not (bundle.rootfs / LIBDIR.lstrip("/") / "libcuda.so").exists()


def test_closed_stdin_is_one_line() -> None:
    proc = subprocess.run(
        [*hook_argv(), "create-symlinks", "--link", LINK],
        capture_output=True,
        text=True,
        check=False,
        preexec_fn=lambda: os.close(0),
    )
    assert_one_line_error(proc, "OCI state on stdin: no stdin")


HEAVY = {
    "typing", "re", "json", "argparse", "attr", "attrs", "yaml", "pynvml", "ctypes", "enum",
    "select", "signal", "subprocess", "threading",
    "os", "posixpath", "stat",  # cdi.hook.sysos stands in for os: ~1 ms less per container
}  # fmt: skip


def test_hook_imports_nothing_heavy(tmp_path: Path) -> None:
    """Start-up is the cost of every container start: only cdi.hook and light stdlib load."""
    bundle = make_bundle(tmp_path)
    chain = [
        "create-symlinks", "--link", LINK, "--link-if-target", "../card1::/dev/dri/by-path/x",
        "enable-cuda-compat", "--host-driver-version", "550.1", "chmod", "--mode", "755",
        "--path", "/etc", "disable-device-node-modification", "update-application-profile",
    ]  # fmt: skip
    if os.geteuid() == 0:  # chroot and setuid for ldconfig
        chain += ["update-ldcache", "--folder", LIBDIR]
    proc = subprocess.run(
        [*hook_argv()[:1], "-X", "importtime", *hook_argv()[1:], *chain],
        input=bundle.state,
        capture_output=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    imported = {
        line.split("|")[-1].strip()
        for line in proc.stderr.decode().splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "cdi.hook.actions" in imported
    assert not {name.split(".")[0] for name in imported} & HEAVY
    assert not {n for n in imported if n.startswith("cdi.") and not n.startswith("cdi.hook")}


def test_hook_package_imports_only_itself_and_the_standard_library() -> None:
    """cdi/hook is packaged on its own (a single-file zipapp on nodes): every import in it,
    at any depth of any function, is cdi.hook or the standard library."""
    import ast

    package = Path(HOOK_MAIN).parent
    for source in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(source.read_text(), str(source))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                ok = name == "cdi.hook" or name.startswith("cdi.hook.")
                ok = ok or (top != "cdi" and top in sys.stdlib_module_names)
                assert ok, f"{source.name}:{node.lineno} imports {name}"


def test_hook_runs_from_a_copy_of_its_package_alone(tmp_path: Path) -> None:
    """Only cdi/hook/*.py and an empty cdi/__init__.py: the hook still runs."""
    copy = tmp_path / "standalone" / "cdi"
    (copy / "hook").mkdir(parents=True)
    (copy / "__init__.py").write_text("")
    for source in Path(HOOK_MAIN).parent.glob("*.py"):
        (copy / "hook" / source.name).write_text(source.read_text())
    bundle = make_bundle(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-I", "-S", str(copy / "hook/__main__.py"), "create-symlinks",
         "--link", LINK, "update-application-profile"],
        input=bundle.state,
        capture_output=True,
        check=False,
        env={},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (
        bundle.rootfs / "etc/nvidia/nvidia-application-profiles-rc.d/10-container.conf"
    ).exists()


def test_hook_command_is_a_working_invocation() -> None:
    from cdi.hook.command import HOOK_ENV, hook_command

    path, prefix = hook_command()
    assert os.path.isabs(path) and prefix[0] == path and prefix[1:3] == ["-I", "-S"]
    assert HOOK_ENV  # an empty env would make runc pass the container's environment
    proc = subprocess.run([*prefix, "--version"], capture_output=True, text=True, env={})
    assert proc.returncode == 0 and proc.stdout.startswith("gpu-cdi-hook "), proc.stderr
    with pytest.raises(ValueError, match="not an absolute path"):
        hook_command("python3")
