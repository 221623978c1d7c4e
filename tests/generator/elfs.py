"""Real ELF shared libraries for tests, compiled with gcc (cached per test session)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.require import need_tool


def shared_library(folder: Path, name: str, soname: str | None) -> Path:
    """Compile a tiny shared library `folder/name` with DT_SONAME `soname` (None: no SONAME)."""
    gcc = need_tool("gcc")
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / f".{name}.c"
    source.write_text("int gpu_cdi_test(void) { return 1; }\n")
    cmd = [gcc, "-shared", "-fPIC", "-nostdlib", "-o", str(folder / name), str(source)]
    if soname:
        cmd.insert(1, f"-Wl,-soname,{soname}")
    subprocess.run(cmd, check=True, capture_output=True)
    source.unlink()
    return folder / name
