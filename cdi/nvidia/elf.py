"""Read the SONAME of an ELF shared library (64- or 32-bit, either byte order) without tools."""

from __future__ import annotations

import struct

_DT_NULL, _DT_STRTAB, _DT_SONAME = 0, 5, 14
_PT_DYNAMIC, _PT_LOAD = 2, 1


def soname(path: str) -> str | None:
    """The DT_SONAME of the library at `path`; None when it has none or is not ELF."""
    try:
        with open(path, "rb") as stream:
            data = stream.read()
    except OSError:
        return None
    try:
        return _soname(data)
    except (struct.error, IndexError, UnicodeDecodeError):
        return None


def _soname(data: bytes) -> str | None:
    if data[:4] != b"\x7fELF":
        return None
    wide = data[4] == 2
    end = "<" if data[5] == 1 else ">"
    if wide:
        phoff, phentsize, phnum = (
            struct.unpack_from(end + "Q", data, 0x20)[0],
            *struct.unpack_from(end + "HH", data, 0x36),
        )
        phdr, dyn = end + "IIQQQQQQ", end + "qQ"
    else:
        phoff, phentsize, phnum = (
            struct.unpack_from(end + "I", data, 0x1C)[0],
            *struct.unpack_from(end + "HH", data, 0x2A),
        )
        phdr, dyn = end + "IIIIIIII", end + "iI"
    loads: list[tuple[int, int, int]] = []  # (vaddr, offset, filesz)
    dynamic: tuple[int, int] | None = None
    for i in range(phnum):
        fields = struct.unpack_from(phdr, data, phoff + i * phentsize)
        if wide:
            p_type, _flags, offset, vaddr, _paddr, filesz = fields[:6]
        else:
            p_type, offset, vaddr, _paddr, filesz = fields[:5]
        if p_type == _PT_LOAD:
            loads.append((vaddr, offset, filesz))
        elif p_type == _PT_DYNAMIC:
            dynamic = (offset, filesz)
    if dynamic is None:
        return None
    strtab = name = None
    size = struct.calcsize(dyn)
    for pos in range(dynamic[0], dynamic[0] + dynamic[1], size):
        tag, value = struct.unpack_from(dyn, data, pos)
        if tag == _DT_NULL:
            break
        if tag == _DT_STRTAB:
            strtab = value
        elif tag == _DT_SONAME:
            name = value
    if strtab is None or name is None:
        return None
    # DT_STRTAB is a virtual address: map it to a file offset through the PT_LOAD segments.
    for vaddr, offset, filesz in loads:
        if vaddr <= strtab < vaddr + filesz:
            start = offset + (strtab - vaddr) + name
            return data[start : data.index(b"\0", start)].decode()
    return None
