"""Run this checkout's programs (`gpu-cdi`, `gpu-cdi-nri`) where this filesystem is not `/`:

- in a container: `image_layer()` is the offline busybox image (tests/e2e/image.py) plus
  `/opt/gpu-cdi/bin/<program>` launchers; `bind_mounts()` lists what to bind-mount read-only at
  the same paths (this interpreter, the venv, the checkout, /usr for the C libraries), so the
  container runs exactly the code under test without building a Python image;
- chrooted into a fake node (`on_node`): the node's tree becomes `/` in a private mount
  namespace, and this machine's `/` is bind-mounted read-only at `/.pyroot` inside it, from
  where the dynamic loader, the interpreter and the code are started. Nothing else of this
  machine is visible, so the program sees the fake node as a real one sees itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.e2e.image import build_layer

PROJECT = Path(__file__).resolve().parents[2]
BIN_DIR = "/opt/gpu-cdi/bin"
PATH = f"{BIN_DIR}:/usr/sbin:/usr/bin:/sbin:/bin"
PROGRAMS = {"gpu-cdi": "cdi", "gpu-cdi-nri": "nri_plugin.cli"}
PYROOT = "/.pyroot"
# Top-level entries a merged-usr host makes symlinks into /usr; real directories elsewhere.
_USR_LINKS = ("lib", "lib64", "lib32", "libx32")


def _python() -> Path:
    return Path(sys.executable)


def bind_mounts() -> list[str]:
    """Host paths to bind-mount read-only, at the same path, into a container made from
    `image_layer()`: the image then runs this interpreter with this venv and checkout."""
    out = ["/usr", sys.prefix, str(PROJECT)]
    base = os.path.realpath(sys.base_prefix)
    if not base.startswith("/usr/"):
        out.append(base)
    out += [f"/{name}" for name in _USR_LINKS if os.path.isdir(f"/{name}")]
    out = [path for path in out if not os.path.islink(path)]
    return sorted(set(out), key=lambda path: (path.count("/"), path))


def image_layer() -> bytes:
    """The image's only layer: busybox, a launcher per program, /lib* links as on this host."""
    launchers = {
        f"{BIN_DIR}/{name}": (f'#!/bin/sh\nexec {_python()} -m {module} "$@"\n', 0o755)
        for name, module in PROGRAMS.items()
    }
    links = {name: os.readlink(f"/{name}") for name in _USR_LINKS if os.path.islink(f"/{name}")}
    return build_layer(extra_files=launchers, symlinks=links, dirs=("host",))


def _loader() -> str:
    """The dynamic loader this interpreter runs under (its PT_INTERP, symlinks resolved)."""
    out = subprocess.run(
        ["ldd", str(_python())], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    for line in out.splitlines():
        word = line.split()[0] if line.split() else ""
        if word.startswith("/") and "ld-linux" in word:
            return os.path.realpath(word)
    raise RuntimeError(f"no dynamic loader in `ldd {_python()}`:\n{out}")


def _library_dirs() -> list[str]:
    arch = sysconfig.get_config_var("MULTIARCH") or ""
    dirs = [str(sysconfig.get_config_var("LIBDIR") or "")]
    dirs += [f"/usr/lib/{arch}", f"/lib/{arch}", "/usr/lib", "/lib"]
    return [os.path.realpath(d) for d in dict.fromkeys(dirs) if d and os.path.isdir(d)]


def on_node(
    node: Path,
    program: str,
    args: Sequence[str],
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run `program ARGS` as if `node` were the machine's `/` (root: unshare and chroot)."""
    (node / PYROOT.lstrip("/")).mkdir(exist_ok=True)
    site = sysconfig.get_path("purelib")
    paths = [PYROOT + str(PROJECT), PYROOT + site]
    boot = (
        f"import sys; sys.path[:0] = {paths!r}; sys.argv[0] = {program!r}; "
        f"import runpy; runpy.run_module({PROGRAMS[program]!r}, run_name='__main__')"
    )
    inner = [
        f"{PYROOT}{_loader()}",
        "--library-path",
        ":".join(PYROOT + d for d in _library_dirs()),
        PYROOT + os.path.realpath(_python()),
        "-I",
        "-c",
        boot,
        *args,
    ]
    script = (
        'set -e; mount --bind / "$1/.pyroot"; mount -o remount,bind,ro "$1/.pyroot"; '
        'root="$1"; shift; cd "$root"; exec chroot "$root" "$@"'
    )
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(node),
         *inner],
        capture_output=True,
        text=True,
        env={"PATH": PATH, **(env or {})},
        timeout=timeout,
        check=False,
    )  # fmt: skip
