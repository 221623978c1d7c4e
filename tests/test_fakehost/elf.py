"""Read the SONAME of a 64-bit little-endian ELF shared object (what ldconfig reads)."""

from __future__ import annotations

import struct
from pathlib import Path

DT_NULL = 0
DT_STRTAB = 5
DT_SONAME = 14
PT_LOAD = 1
PT_DYNAMIC = 2


def soname(path: Path) -> str | None:
    """DT_SONAME of `path`, or None when it has none."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError(f"{path}: not a 64-bit little-endian ELF file")
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    loads: list[tuple[int, int, int]] = []  # (vaddr, offset, filesz)
    dynamic = None
    for i in range(phnum):
        p_type, _flags, off, vaddr, _paddr, filesz = struct.unpack_from(
            "<IIQQQQ", data, phoff + i * phentsize
        )
        if p_type == PT_LOAD:
            loads.append((vaddr, off, filesz))
        elif p_type == PT_DYNAMIC:
            dynamic = (off, filesz)
    if dynamic is None:
        return None
    strtab = name_off = None
    off, size = dynamic
    for pos in range(off, off + size, 16):
        tag, val = struct.unpack_from("<qQ", data, pos)
        if tag == DT_NULL:
            break
        if tag == DT_STRTAB:
            strtab = val
        elif tag == DT_SONAME:
            name_off = val
    if strtab is None or name_off is None:
        return None
    # DT_STRTAB is a virtual address; map it to a file offset through the PT_LOAD segments.
    for vaddr, seg_off, filesz in loads:
        if vaddr <= strtab < vaddr + filesz:
            start = seg_off + (strtab - vaddr) + name_off
            return data[start : data.index(b"\0", start)].decode()
    raise ValueError(f"{path}: DT_STRTAB outside the loaded segments")
