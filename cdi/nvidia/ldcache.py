"""Parse ld.so.cache (glibc's `glibc-ld.so.cache1.1` format, also behind the old `ld.so-1.7.0`
header) into (library name, path) pairs, without running ldconfig."""

# Annotations are evaluated (no `from __future__ import annotations`): a NamedTuple's string
# annotations are each compiled at class creation, on every `gpu-cdi` start.
import struct
from typing import NamedTuple

_OLD_MAGIC = b"ld.so-1.7.0"
_NEW_MAGIC = b"glibc-ld.so.cache1.1"
_HEADER = struct.Struct("<20sIIB3xI12x")  # magic+version, nlibs, len_strings, flags, ext offset
_ENTRY = struct.Struct("<iIIIQ")  # flags, key, value, osversion, hwcap
_OLD_ENTRY_SIZE = 12
_ARCH_MASK = 0xFF00
# 64-bit library flags (FLAG_ELF_LIBC6 | arch): x86-64 0x0303, aarch64 0x0a03, and the rest
# of glibc's 64-bit ABIs; 32-bit entries are left out as nvidia-ctk leaves them out.
_WIDE = frozenset((0x0300, 0x0500, 0x0600, 0x0700, 0x0A00, 0x0B00, 0x0C00))


class Entry(NamedTuple):
    """One cache entry: the name a program asks for and the path the loader uses."""

    name: str
    path: str
    wide: bool


class CacheError(ValueError):
    """Not an ld.so.cache file, or a truncated one."""


def parse(data: bytes) -> list[Entry]:
    """Every entry of a cache file's content, in cache order."""
    start = 0
    if data.startswith(_OLD_MAGIC):
        # The old table comes first; the new-format cache follows it, 8-byte aligned.
        (count,) = struct.unpack_from("<I", data, 12)
        start = 16 + count * _OLD_ENTRY_SIZE
        start = data.find(_NEW_MAGIC, start)
        if start < 0:
            raise CacheError("old-format ld.so.cache without a glibc-ld.so.cache1.1 part")
    if data[start : start + len(_NEW_MAGIC)] != _NEW_MAGIC:
        raise CacheError("not an ld.so.cache file (no glibc-ld.so.cache1.1 magic)")
    try:
        _magic, count, _strings, _flags, _ext = _HEADER.unpack_from(data, start)
        entries = []
        for i in range(count):
            flags, key, value, _os, _hwcap = _ENTRY.unpack_from(
                data, start + _HEADER.size + i * _ENTRY.size
            )
            entries.append(
                Entry(
                    _string(data, start + key),
                    _string(data, start + value),
                    flags & _ARCH_MASK in _WIDE,
                )
            )
    except (struct.error, ValueError) as error:
        raise CacheError(f"truncated ld.so.cache: {error}") from None
    return entries


def _string(data: bytes, offset: int) -> str:
    end = data.index(b"\0", offset)
    return data[offset:end].decode("utf-8", "surrogateescape")


def load(path: str) -> list[Entry]:
    """Entries of the cache file at `path`; [] when it is missing or unreadable."""
    try:
        with open(path, "rb") as stream:
            data = stream.read()
    except OSError:
        return []
    try:
        return parse(data)
    except CacheError:
        return []
