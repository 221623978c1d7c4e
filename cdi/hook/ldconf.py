"""The container's ld.so.conf, read as ldconfig reads it, before ldconfig ever runs.

Two uses. Which directories are configured already (update-ldcache adds only the others, as
nvidia-cdi-hook does). And safety: every file ldconfig would read must be a regular file. An
image can name a FIFO, a device or `/dev/zero` in an `include` line or make ld.so.conf itself
one; ldconfig would then block forever or read without end. Such a file fails the hook with a
line naming it and the file that includes it, before ldconfig starts.

Globs in `include` lines are expanded here, inside the rootfs, with a small matcher for `*`,
`?` and `[...]`: fnmatch and glob import `re`, about 8 ms of every container start.
"""

from __future__ import annotations

from _stat import S_ISDIR, S_ISREG

from cdi.hook import sysos as os  # os without its start-up cost (see sysos)
from cdi.hook.errors import HookError
from cdi.hook.rootfs import Rootfs, file_kind

MAX_FILES = 1024  # configuration files in one tree: far more than any distribution ships
MAX_DEPTH = 16  # includes within includes; distributions use 2
MAX_READS = 4096  # files ldconfig opens for the tree, counting each include of a file
_MAGIC = "*?["


def match(name: str, pattern: str) -> bool:
    """fnmatch(3) without flags for one path component: `*`, `?`, `[a-z]`, `[!x]`, `\\x`."""
    n = p = 0
    star_p = star_n = -1
    while n < len(name):
        if p < len(pattern):
            c = pattern[p]
            if c == "*":
                star_p, star_n = p, n
                p += 1
                continue
            if c == "?":
                n += 1
                p += 1
                continue
            if c == "[":
                end, ok = _bracket(pattern, p, name[n])
                if end is not None:
                    if ok:
                        n += 1
                        p = end
                        continue
                elif name[n] == "[":  # an unclosed `[` matches itself
                    n += 1
                    p += 1
                    continue
            elif c == "\\" and p + 1 < len(pattern):
                if name[n] == pattern[p + 1]:
                    n += 1
                    p += 2
                    continue
            elif c == name[n]:
                n += 1
                p += 1
                continue
        if star_p < 0:
            return False
        star_n += 1
        n, p = star_n, star_p + 1
    return pattern[p:].strip("*") == ""


def _bracket(pattern: str, start: int, char: str) -> tuple[int | None, bool]:
    """(index after the `]`, whether `char` is in the set), or (None, False) if unclosed."""
    i = start + 1
    negate = i < len(pattern) and pattern[i] in "!^"
    if negate:
        i += 1
    found = False
    first = True
    while i < len(pattern) and (first or pattern[i] != "]"):
        first = False
        low = pattern[i]
        if i + 2 < len(pattern) and pattern[i + 1] == "-" and pattern[i + 2] != "]":
            if low <= char <= pattern[i + 2]:
                found = True
            i += 3
        else:
            found = found or low == char
            i += 1
    if i >= len(pattern):
        return None, False
    return i + 1, found != negate


def glob(root: Rootfs, pattern: str) -> list[str]:
    """Paths inside the rootfs matching the absolute `pattern`, sorted as glob(3) sorts them.

    Hidden names match only a component that starts with `.` itself; what does not exist (a
    file where the pattern needs a directory included) is left out, as glob(3) does.
    """
    found = [""]
    for part in pattern.split("/"):
        if not part:
            continue
        if not any(c in part for c in _MAGIC):
            found = [f"{base}/{part}" for base in found]
            continue
        matches = []
        for base in found:
            try:
                names = root.listdir(base or "/")
            except HookError:  # not a directory, or unreadable: glob(3) skips it too
                continue
            for name in names or ():
                if (name[0] != "." or part[0] == ".") and match(name, part):
                    matches.append(f"{base}/{name}")
        found = sorted(matches)
    return [path for path in found if path and _exists(root, path)]


def _exists(root: Rootfs, path: str) -> bool:
    try:
        return root.lookup(path, follow=False) is not None
    except HookError:  # a component is not a directory
        return False


def _canonical_dir(line: str) -> str:
    """A directory line as ldconfig keeps it: no `=TYPE`, trailing blanks or slashes."""
    path = line.split("=", 1)[0].rstrip()
    while len(path) > 1 and path.endswith("/"):
        path = path[:-1]
    return path


class LdConf:
    """The directories an ld.so.conf tree names, and the files it consists of.

    Besides files that are not regular, two shapes of include make ldconfig run without end
    and are refused: a file that includes itself through its includes (ldconfig recurses until
    it runs out of file descriptors, doubling at each level if included twice), and includes
    of includes that add up to more reads than MAX_READS (ldconfig reads a file again each
    time it is included).
    """

    def __init__(self, root: Rootfs, top: str, skip: frozenset[str] = frozenset()) -> None:
        self.root = root
        self.dirs: list[str] = []
        self.files: list[str] = []
        self._skip = skip
        # (st_dev, st_ino) -> (path, the files it includes, reads it costs ldconfig)
        self._parsed: dict[tuple[int, int], tuple[str, list[str]]] = {}
        self._reads: dict[tuple[int, int], int] = {}
        self._visit(top, "", ())

    def _visit(self, path: str, origin: str, chain: tuple[tuple[int, int], ...]) -> int:
        """How many file reads ldconfig spends on `path` and what it includes."""
        key = self._stat(path, origin)
        if key is None:
            return 1
        where = f" (included from {origin})" if origin else ""
        if key in chain:
            raise self.root.error(
                path, f"includes itself{where}; ldconfig would recurse without end"
            )
        if key in self._reads:
            return self._reads[key]
        if len(chain) >= MAX_DEPTH:
            raise self.root.error(path, f"includes nested more than {MAX_DEPTH} deep{where}")
        reads = 1
        for include in self._parse(key, path, where):
            reads += self._visit(include, path, (*chain, key))
            if reads > MAX_READS:
                raise self.root.error(
                    path,
                    f"its includes add up to more than {MAX_READS} file reads{where};"
                    " ldconfig would not finish",
                )
        self._reads[key] = reads
        return reads

    def _stat(self, path: str, origin: str) -> tuple[int, int] | None:
        """Identity of the regular file `path`; None for what ldconfig skips (missing, a
        directory, our own drop-ins); an error for anything it would block on."""
        if os.path.basename(path) in self._skip:
            return None
        try:
            fd = self.root.resolve(path)
        except HookError:  # missing, a file where a directory should be, a link not followed
            return None  # ldconfig cannot open it either: it warns and goes on
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        if S_ISDIR(st.st_mode):
            return None  # ldconfig reads nothing from a directory
        if not S_ISREG(st.st_mode):
            where = f" (included from {origin})" if origin else ""
            raise self.root.error(
                path,
                f"is {file_kind(st.st_mode)}{where}; ldconfig would block or read it forever,"
                " so the container's ld.so.cache cannot be built",
            )
        return st.st_dev, st.st_ino

    def _parse(self, key: tuple[int, int], path: str, where: str) -> list[str]:
        """The files `path` includes, in order; its directories join `dirs` (once per file)."""
        if key in self._parsed:
            return self._parsed[key][1]
        self.files.append(path)
        if len(self.files) > MAX_FILES:
            raise self.root.error(path, f"more than {MAX_FILES} ld.so.conf files{where}")
        data = self.root.read_file(path) or b""
        includes: list[str] = []
        for raw in data.decode("utf-8", "replace").split("\n"):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            keyword = line.split(None, 1)
            if len(keyword) == 2 and keyword[0] == "include":
                for pattern in keyword[1].split():
                    if not pattern.startswith("/"):  # relative to the including file
                        pattern = f"{os.path.dirname(path)}/{pattern}"
                    if any(c in pattern for c in _MAGIC):
                        includes += glob(self.root, pattern)
                    else:
                        includes.append(pattern)
            elif len(keyword) == 2 and keyword[0].lower() == "hwcap":
                continue
            else:
                self.dirs.append(_canonical_dir(line))
        self._parsed[key] = (path, includes)
        return includes
