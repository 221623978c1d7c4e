"""Compile (once, cached) the fake NVML and sandboxutils libraries and the template for tiny
driver libraries."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
NVML_SOURCE = PACKAGE_DIR / "fakenvml.c"
NVML_SONAME = "libnvidia-ml.so.1"
SANDBOXUTILS_SOURCE = PACKAGE_DIR / "fakesandboxutils.c"
SANDBOXUTILS_SONAME = "libnvidia-sandboxutils.so.1"
CFLAGS = ("-O2", "-Wall", "-Wextra", "-Werror", "-fPIC", "-fvisibility=hidden")

# The stub template carries this SONAME; each copy gets its real SONAME patched in over it.
# Long enough for any driver library name, and unique in the file.
SONAME_PLACEHOLDER = b"FAKEHOST_SONAME_PLACEHOLDER_" + b"X" * 100
_STUB_SOURCE = """\
/* A stand-in driver library: a real ELF shared object with a SONAME and one symbol. */
__attribute__((visibility("default"))) int fakehost_stub_library(void) { return 0; }
"""


class BuildError(RuntimeError):
    """gcc or the NVML header is missing, or compilation failed."""


def cache_dir() -> Path:
    """$GPU_CDI_CACHE/fakenvml, else <repo>/.cache/fakenvml, else ~/.cache/gpu-cdi/fakenvml."""
    env = os.environ.get("GPU_CDI_CACHE")
    if env:
        return Path(env) / "fakenvml"
    repo = PACKAGE_DIR.parents[2]
    if (repo / "pyproject.toml").is_file():
        return repo / ".cache" / "fakenvml"
    return Path.home() / ".cache" / "gpu-cdi" / "fakenvml"


def find_nvml_header() -> Path:
    """nvml.h from the nvidia-nvml-dev wheel (or $FAKE_NVML_INCLUDE)."""
    env = os.environ.get("FAKE_NVML_INCLUDE")
    candidates: list[Path] = [Path(env) / "nvml.h"] if env else []
    spec = importlib.util.find_spec("nvidia")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for base in locations:
        candidates.extend(sorted(Path(base).glob("*/include/nvml.h")))
        candidates.append(Path(base) / "include" / "nvml.h")
    for c in candidates:
        if c.is_file():
            return c
    raise BuildError(
        "nvml.h not found: install the nvidia-nvml-dev wheel (pip install nvidia-nvml-dev, part "
        "of gpu-cdi's test extras) or set FAKE_NVML_INCLUDE to a directory holding nvml.h"
    )


def _gcc() -> str:
    gcc = shutil.which(os.environ.get("CC", "gcc"))
    if gcc is None:
        raise BuildError("gcc not found on PATH: the fake NVML library is built from C")
    return gcc


@functools.cache
def _gcc_version(gcc: str) -> bytes:
    return subprocess.run([gcc, "--version"], capture_output=True, check=False).stdout


def _compile(gcc: str, args: list[str], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=out.name + ".", dir=out.parent)
    os.close(fd)
    try:
        proc = subprocess.run([gcc, *args, "-o", tmp], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise BuildError(f"gcc failed building {out.name}:\n{proc.stderr.strip()}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _build_library(source: Path, soname: str, stem: str, header: Path | None, force: bool) -> Path:
    """Compile `source` into a shared library, cached by a hash of everything that shapes it."""
    gcc = _gcc()
    h = hashlib.sha256()
    parts = (source.read_bytes(), header.read_bytes() if header else b"", _gcc_version(gcc))
    for part in (*parts, *CFLAGS):
        h.update(part if isinstance(part, bytes) else part.encode())
        h.update(b"\0")
    out = cache_dir() / f"{stem}-{h.hexdigest()[:16]}.so"
    if force or not out.is_file():
        args = [*CFLAGS, "-shared", f"-Wl,-soname,{soname}"]
        if header:
            args.append(f"-I{header.parent}")
        _compile(gcc, [*args, str(source)], out)
        # hosts hold copies, so older builds are no longer needed
        for stale in out.parent.glob(f"{stem}-*.so"):
            if stale != out:
                stale.unlink(missing_ok=True)
    return out


def build_fake_nvml(*, force: bool = False) -> Path:
    """The compiled fake libnvidia-ml.so.1, built on first use and cached by content hash."""
    return _build_library(NVML_SOURCE, NVML_SONAME, "libnvidia-ml", find_nvml_header(), force)


def build_fake_sandboxutils(*, force: bool = False) -> Path:
    """The compiled fake libnvidia-sandboxutils.so.1 (drivers >= 560), cached like the NVML one."""
    return _build_library(SANDBOXUTILS_SOURCE, SANDBOXUTILS_SONAME, "libnvidia-sandboxutils",
                          None, force)  # fmt: skip


def build_stub_template() -> Path:
    """A tiny ELF shared object whose SONAME is SONAME_PLACEHOLDER (cached)."""
    gcc = _gcc()
    h = hashlib.sha256(_STUB_SOURCE.encode() + SONAME_PLACEHOLDER + _gcc_version(gcc))
    out = cache_dir() / f"stub-{h.hexdigest()[:16]}.so"
    if not out.is_file():
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "stub.c"
            src.write_text(_STUB_SOURCE)
            soname = SONAME_PLACEHOLDER.decode()
            _compile(gcc, ["-shared", "-fPIC", f"-Wl,-soname,{soname}", str(src)], out)
        if out.read_bytes().count(SONAME_PLACEHOLDER) != 1:
            out.unlink()
            raise BuildError("stub template: SONAME placeholder not found exactly once")
    return out


def stub_library(template: bytes, soname: str) -> bytes:
    """The template with `soname` in place of the placeholder (NUL-padded in .dynstr)."""
    name = soname.encode()
    if len(name) > len(SONAME_PLACEHOLDER):
        raise BuildError(f"SONAME too long for the stub template: {soname}")
    return template.replace(
        SONAME_PLACEHOLDER, name + b"\0" * (len(SONAME_PLACEHOLDER) - len(name)), 1
    )


def main_build_lib(force: bool = False) -> int:
    """`python -m gpu_cdi_fakehost build-lib`: build and print the cached library path."""
    try:
        lib = build_fake_nvml(force=force)
        build_fake_sandboxutils(force=force)
        build_stub_template()
    except BuildError as e:
        print(f"gpu-cdi-fakehost: {e}", file=sys.stderr)
        return 1
    print(lib)
    return 0
