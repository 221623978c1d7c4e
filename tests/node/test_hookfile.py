"""The installed hook: one file, the host's python3, the standard library only, the package's
own behaviour; bytecode on the installing Python, source on others, a clear refusal on old ones.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

import cdi.hook
from cdi.node import hookboot, hookfile
from tests.hook.helpers import HOOK_MAIN, LIBDIR, make_bundle
from tests.node.support import install_hook
from tests.require import need

HOST_PYTHON = "/usr/bin/python3"
PYENV = Path("/root/.pyenv/versions")
LINK = f"libcuda.so.1::{LIBDIR}/libcuda.so"


def _pyenv(minor: int) -> str:
    found = sorted(PYENV.glob(f"3.{minor}.*/bin/python3.{minor}"))
    need(bool(found), f"needs a Python 3.{minor} (pyenv, as on the CI machine) in {PYENV}")
    return str(found[-1])


@pytest.fixture(scope="module")
def hook(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The hook as `gpu-cdi install-hook` writes it, for the host's /usr/bin/python3."""
    need(os.access(HOST_PYTHON, os.X_OK), f"needs {HOST_PYTHON}")
    return install_hook(tmp_path_factory.mktemp("bin"), "--python", HOST_PYTHON)


def run(argv: list[str], stdin: bytes = b"", **env: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        argv,
        input=stdin,
        capture_output=True,
        timeout=60,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **env},
        cwd="/",
    )
    return subprocess.CompletedProcess(
        argv, proc.returncode, proc.stdout.decode(), proc.stderr.decode()
    )


def test_hook_package_imports_only_the_standard_library() -> None:
    # The contract the one-file install rests on: cdi/hook (and the boot module that serves it
    # from the file) need nothing but the host's Python.
    package = Path(cdi.hook.__file__).parent
    outside = set()
    for path in [*package.rglob("*.py"), Path(hookboot.__file__)]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and not name.startswith("cdi.hook"):
                    outside.add(f"{path.name}: {name}")
    assert outside == set()


def test_installed_hook_is_one_file_for_the_hosts_python(hook: Path) -> None:
    data = hook.read_bytes()
    assert data.startswith(f"#!{HOST_PYTHON} -IS\n".encode())
    assert (hook.stat().st_mode & 0o7777) == 0o755
    # Nothing points back into this checkout or its virtualenv.
    assert str(Path(cdi.hook.__file__).parents[2]).encode() not in data
    assert sys.prefix.encode() not in data
    proc = run([str(hook), "--version"])
    assert (proc.returncode, proc.stdout, proc.stderr) == (
        0,
        f"gpu-cdi-hook {version('gpu-cdi')}\n",
        "",
    )


def test_installed_hook_acts_like_the_package(hook: Path, tmp_path: Path) -> None:
    results = []
    for name, argv in (("tree", [sys.executable, "-I", "-S", HOOK_MAIN]), ("file", [str(hook)])):
        bundle = make_bundle(tmp_path / name)
        proc = run([*argv, "create-symlinks", "--link", LINK], bundle.state)
        assert proc.returncode == 0, proc.stderr
        link = bundle.rootfs / LIBDIR.lstrip("/") / "libcuda.so"
        results.append((proc.stdout, proc.stderr, os.readlink(link)))
        bad = run([*argv, "create-symlinks", "--link", "no-separator"], bundle.state)
        results.append((bad.returncode, bad.stdout, bad.stderr))
    assert results[0] == results[2] and results[1] == results[3]
    assert results[0][2] == "libcuda.so.1"
    assert results[1][0] == 2 and "gpu-cdi-hook:" in results[1][2]


def test_nothing_outside_the_file_can_stand_in_for_the_hook(hook: Path, tmp_path: Path) -> None:
    # A `cdi` package on PYTHONPATH, in the working directory or in user site is never used.
    planted = tmp_path / "planted" / "cdi" / "hook"
    planted.mkdir(parents=True)
    (planted.parent / "__init__.py").write_text("raise SystemExit('planted cdi imported')\n")
    (planted / "__init__.py").write_text("")
    (planted / "main.py").write_text("def main():\n    print('planted'); return 0\n")
    proc = subprocess.run(
        [str(hook), "--version"],
        capture_output=True,
        text=True,
        cwd=planted.parent.parent,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(planted.parent.parent),
             "PYTHONHOME": "/nonexistent", "PYTHONUSERBASE": str(tmp_path / "planted")},
        timeout=60,
    )  # fmt: skip
    assert (proc.returncode, proc.stdout, proc.stderr) == (
        0,
        f"gpu-cdi-hook {version('gpu-cdi')}\n",
        "",
    )


@pytest.mark.parametrize("minor", [12, 13])
def test_a_newer_python_runs_the_source(minor: int, tmp_path: Path) -> None:
    python = _pyenv(minor)
    hook = tmp_path / "gpu-cdi-hook"
    hook.write_bytes(hookfile.render(python, version("gpu-cdi")))
    hook.chmod(0o755)
    assert run([str(hook), "--version"]).stdout == "gpu-cdi-hook " + version("gpu-cdi") + "\n"
    bundle = make_bundle(tmp_path)
    proc = run([str(hook), "create-symlinks", "--link", LINK], bundle.state)
    assert proc.returncode == 0, proc.stderr
    assert os.readlink(bundle.rootfs / LIBDIR.lstrip("/") / "libcuda.so") == "libcuda.so.1"


def test_an_older_python_is_refused_in_one_line(tmp_path: Path) -> None:
    python = _pyenv(10)
    hook = tmp_path / "gpu-cdi-hook"
    hook.write_bytes(hookfile.render(python, version("gpu-cdi")))
    hook.chmod(0o755)
    proc = run([str(hook), "--version"])
    assert proc.returncode == 1 and proc.stdout == ""
    assert re.fullmatch(
        rf"gpu-cdi-hook: needs Python >= 3\.11; {python} is 3\.10\.\d+\n", proc.stderr
    )


def test_render_refuses_an_interpreter_that_cannot_go_on_the_first_line() -> None:
    for bad in ("python3", "/usr/bin/my python3"):
        with pytest.raises(ValueError, match="absolute path without spaces"):
            hookfile.render(bad, "1")


def test_a_module_that_does_not_compile_is_one_line_naming_it() -> None:
    with pytest.raises(ValueError) as error:
        hookfile.compiled({"cdi.hook.bad": (False, b"x = 1\ny = (\n")})
    message = str(error.value)
    assert "\n" not in message
    assert f"{hookboot.filename('cdi.hook.bad', False)}, line 2: '(' was never closed" in message
    assert message.startswith(f"compiling the hook with {sys.executable} failed (exit 1): ")
