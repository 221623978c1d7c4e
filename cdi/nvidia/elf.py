"""Read the SONAME of an ELF shared library (64- or 32-bit, either byte order) without tools.

Only the parts that lead to it are read (the header, the program headers, the dynamic
segment, the name): driver libraries are tens of megabytes each, and a driver has dozens."""

from __future__ import annotations

import os
import struct

_DT_NULL, _DT_STRTAB, _DT_SONAME = 0, 5, 14
_PT_DYNAMIC, _PT_LOAD = 2, 1
# Read at once from the start: the ELF header and the program headers, in any library.
_HEAD = 4096


class _File:
    """Byte ranges of an open file, as slices of its content would give them (short at EOF)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.size = os.fstat(fd).st_size
        self.head = os.pread(fd, _HEAD, 0)

    def read(self, offset: int, size: int) -> bytes:
        if offset + size <= len(self.head):
            return self.head[offset : offset + size]
        size = min(size, self.size - offset)  # offsets and sizes come from the file itself
        return os.pread(self.fd, size, offset) if size > 0 else b""

    def string(self, offset: int) -> bytes:
        """The NUL-terminated string at `offset`; ValueError when the file ends first."""
        out = b""
        while True:
            chunk = self.read(offset + len(out), 256)
            end = chunk.find(b"\0")
            if end >= 0:
                return out + chunk[:end]
            if len(chunk) < 256:
                raise ValueError("unterminated string")
            out += chunk


def soname(path: str) -> str | None:
    """The DT_SONAME of the library at `path`; None when it has none or is not ELF."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return _soname(_File(fd))
    except (OSError, struct.error, IndexError, ValueError):  # UnicodeDecodeError is one
        return None
    finally:
        os.close(fd)


def _soname(file: _File) -> str | None:
    data = file.head
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
    headers = file.read(phoff, (phnum - 1) * phentsize + struct.calcsize(phdr) if phnum else 0)
    loads: list[tuple[int, int, int]] = []  # (vaddr, offset, filesz)
    dynamic: tuple[int, int] | None = None
    for i in range(phnum):
        fields = struct.unpack_from(phdr, headers, i * phentsize)
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
    # The last entry may run past the segment's end into what follows it in the file.
    entries = file.read(dynamic[0], dynamic[1] + size)
    for pos in range(0, dynamic[1], size):
        tag, value = struct.unpack_from(dyn, entries, pos)
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
            return file.string(offset + (strtab - vaddr) + name).decode()
    return None
