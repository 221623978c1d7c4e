"""Running `gpu-cdi` subcommands of the node area as their own processes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # where pip put our programs (make venv)


def _programs() -> tuple[str, ...]:
    import tomllib

    with open(PROJECT / "pyproject.toml", "rb") as stream:
        return tuple(tomllib.load(stream)["project"]["scripts"])


PROGRAMS = _programs()  # what `pip install .` puts on PATH


def gpu_cdi(
    args: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`gpu-cdi ARGS` (the installed console script), output as text."""
    return subprocess.run(
        [str(BIN / "gpu-cdi"), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd or PROJECT,
        timeout=120,
        check=False,
    )


def one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    """The single stderr line of a failed run (exit 2, nothing on stdout), checked for
    `needles`."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == "", proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def hook_paths(spec_text: str) -> set[str]:
    """The hook programs a spec (YAML or JSON text) names."""
    import yaml

    spec = yaml.safe_load(spec_text)
    edits = [spec["containerEdits"], *(d["containerEdits"] for d in spec["devices"])]
    return {hook["path"] for edit in edits for hook in edit.get("hooks", [])}


def install_hook(prefix: Path, *extra: str) -> Path:
    """`gpu-cdi install-hook --prefix PREFIX`: the path it printed (checked to be the file)."""
    proc = gpu_cdi(["install-hook", "--prefix", str(prefix), *extra])
    assert proc.returncode == 0, proc.stderr
    path = Path(proc.stdout.strip())
    assert proc.stdout == f"{path}\n"
    return path


def read_only(directory: Path, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """Run `argv` with `directory` mounted read-only (a private mount namespace: needs root)."""
    from tests.require import need_root, need_tool

    need_root()
    unshare = need_tool("unshare")
    script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
    return subprocess.run(
        [unshare, "--mount", "--propagation", "private", "sh", "-c", script, "sh",
         str(directory), *argv],
        capture_output=True, text=True, timeout=120, cwd=PROJECT,
    )  # fmt: skip


# -- the README, tried as a new user would -----------------------------------------------------

README = PROJECT / "README.md"
# Empty /usr/local/bin and /tmp in a private mount namespace (the host keeps its own), then
# `bash -e -c SCRIPT` in the given directory.
_PRIVATE = (
    'set -e; cd "$1"; shift; for d in /usr/local/bin /tmp; do mount -t tmpfs gpu-cdi-test "$d"; '
    'done; exec bash -e -c "$1"'
)


def readme_blocks() -> list[tuple[str, str]]:
    """(language, text) of every fenced block of README.md, in order."""
    import re

    return [(m[1], m[2]) for m in re.finditer(r"```(\w*)\n(.*?)```", README.read_text(), re.S)]


def newcomer_command() -> str:
    """The README's first shell command: what a new user runs first."""
    return next(text.strip() for lang, text in readme_blocks() if lang == "sh")


def tracked_copy(dest: Path) -> None:
    """The checkout's tracked files as they are now (what a clone of this work tree holds)."""
    import shutil

    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=PROJECT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        src = PROJECT / name.decode()
        if src.is_file():
            target = dest / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)


def newcomer_env() -> dict[str, str]:
    """This environment without its virtualenv or the checkout's programs, pip's cache off."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(PROJECT))
    )
    env["PIP_NO_CACHE_DIR"] = "1"
    return env


def run_private(clone: Path, script: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`script` in `clone`, as root in a mount namespace with empty /usr/local/bin and /tmp."""
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", _PRIVATE, "sh",
         str(clone), script],
        capture_output=True, text=True, env=newcomer_env(), timeout=timeout,
    )  # fmt: skip
