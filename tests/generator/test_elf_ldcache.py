"""SONAMEs from real ELF files, and ld.so.cache files written by the real ldconfig."""

from __future__ import annotations

import re
import struct
import subprocess
import sys
from pathlib import Path

from cdi.nvidia import elf, ldcache
from tests.generator.elfs import shared_library
from tests.require import need, need_tool


def test_soname_of_compiled_libraries(tmp_path: Path) -> None:
    lib = shared_library(tmp_path, "libcuda.so.550.163.01", "libcuda.so.1")
    assert elf.soname(str(lib)) == "libcuda.so.1"
    plain = shared_library(tmp_path, "libnvidia-tls.so.550.163.01", None)
    assert elf.soname(str(plain)) is None


def test_soname_of_non_elf_and_truncated_files(tmp_path: Path) -> None:
    text = tmp_path / "script.so"
    text.write_text("#!/bin/sh\n")
    assert elf.soname(str(text)) is None
    lib = shared_library(tmp_path, "libx.so.1", "libx.so.1")
    cut = tmp_path / "cut.so"
    cut.write_bytes(lib.read_bytes()[:100])
    assert elf.soname(str(cut)) is None
    assert elf.soname(str(tmp_path / "missing.so")) is None


def test_soname_reads_only_what_leads_to_it(tmp_path: Path) -> None:
    """A driver library is tens of megabytes: the SONAME comes from its headers, dynamic
    segment and string table, not from reading the whole file (here 4 GiB, mostly a hole)."""
    lib = shared_library(tmp_path, "libbig.so.1", "libbig.so.1")
    with open(lib, "r+b") as stream:
        stream.truncate(4 << 30)
    code = (
        "import resource, sys\n"
        "from cdi.nvidia import elf\n"
        "print(elf.soname(sys.argv[1]), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(lib)], check=True, capture_output=True, text=True
    ).stdout.split()
    assert out[0] == "libbig.so.1"
    assert int(out[1]) < 256 * 1024  # KiB: far from the file's size


def test_system_cache_matches_ldconfig_p() -> None:
    ldconfig = need_tool("ldconfig")
    need(Path("/etc/ld.so.cache").is_file(), "no /etc/ld.so.cache on this machine")
    out = subprocess.run([ldconfig, "-p"], check=True, capture_output=True, text=True).stdout
    listed = re.findall(r"^\s+(\S+) \(([^)]*)\) => (\S+)$", out, re.M)
    entries = ldcache.load("/etc/ld.so.cache")
    assert [(e.name, e.path) for e in entries] == [(name, path) for name, _, path in listed]
    wide = ["64" in flags for _, flags, _ in listed]
    assert [e.wide for e in entries] == wide


def _cache_for(tmp_path: Path) -> bytes:
    ldconfig = need_tool("ldconfig")
    root = tmp_path / "root"
    libdir = root / "usr/lib/x86_64-linux-gnu"
    shared_library(libdir, "libnvidia-ml.so.550.163.01", "libnvidia-ml.so.1")
    (root / "etc").mkdir()
    (root / "etc/ld.so.conf").write_text("/usr/lib/x86_64-linux-gnu\n")
    subprocess.run(
        [ldconfig, "-r", str(root), "-C", "/etc/ld.so.cache", "-f", "/etc/ld.so.conf"],
        check=True,
        capture_output=True,
    )
    return (root / "etc/ld.so.cache").read_bytes()


def test_cache_written_by_ldconfig_for_a_root(tmp_path: Path) -> None:
    entries = ldcache.parse(_cache_for(tmp_path))
    assert ("libnvidia-ml.so.1", "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1") in [
        (e.name, e.path) for e in entries
    ]


def test_cache_behind_an_old_format_header(tmp_path: Path) -> None:
    new = _cache_for(tmp_path)
    # glibc < 2.32 wrote the old table first; the new cache follows it, 8-byte aligned.
    old = b"ld.so-1.7.0\0" + struct.pack("<I", 1) + struct.pack("<iII", 0x303, 0, 0) + b"\0" * 4
    assert ldcache.parse(old + new) == ldcache.parse(new)


def test_not_a_cache(tmp_path: Path) -> None:
    bad = tmp_path / "ld.so.cache"
    bad.write_bytes(b"not a cache at all")
    assert ldcache.load(str(bad)) == []
    truncated = _cache_for(tmp_path)[:60]
    try:
        ldcache.parse(truncated)
    except ldcache.CacheError as error:
        assert "truncated" in str(error)
    else:
        raise AssertionError("a truncated cache parsed")
