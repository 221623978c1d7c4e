"""The hook as one file that runs on the host's own python3: what `gpu-cdi install-hook` writes.

The file is a short launcher (first line `#!PYTHON -IS`: no site, no user or PYTHON* paths, no
working directory on sys.path) and the `cdi.hook` package twice, zlib-compressed and
base64-encoded in string literals: compiled by the interpreter that installs it (marshal), and
as source. At start the launcher compares the running interpreter's bytecode magic with the
one the code was compiled for: equal, it loads the code objects; else it compiles the source,
which costs a few ms per start but runs on any Python >= MIN_PYTHON. A finder first on
sys.meta_path serves `cdi` and `cdi.hook.*` from the file only, so nothing installed on the
host can stand in for them (cdi/node/hookboot.py, itself carried in the tables). It calls the
program's console entry point (as pip's script does), then leaves without interpreter
teardown, as `python -m cdi.hook` does.

Not a zipapp: running a zip imports runpy (with importlib.util, contextlib, functools...),
about 4 ms on every container start; this launcher costs a few hundred microseconds.
"""

from __future__ import annotations

import ast
import binascii
import marshal
import os
import subprocess
import sys
import zlib

from cdi.node import hookboot
from cdi.node.hookpath import HOOK_PROGRAM as PROGRAM

PACKAGE = "cdi.hook"
BOOT = "cdi.node.hookboot"  # travels in the file beside the package, not importable from it
# The package's own floor (pyproject requires-python); the launcher refuses older ones.
MIN_PYTHON = (3, 11)

# name -> (is_package, payload): payload is zlib(marshal(code)) or zlib(source).
Table = dict[str, tuple[bool, bytes]]


def magic() -> bytes:
    """The bytecode magic number of this interpreter (what the launcher compares with)."""
    from importlib.util import MAGIC_NUMBER

    return MAGIC_NUMBER


def package_sources(directory: str | None = None) -> dict[str, tuple[bool, bytes]]:
    """Module name -> (is_package, source) of `cdi.hook` and its parent `cdi` (empty here:
    the real `cdi/__init__.py` belongs to the generator, not to the hook)."""
    if directory is None:
        import cdi.hook

        directory = os.path.dirname(os.path.abspath(cdi.hook.__file__))
    found: dict[str, tuple[bool, bytes]] = {"cdi": (True, b"")}
    for folder, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if os.path.isfile(os.path.join(folder, d, "__init__.py")))
        relative = os.path.relpath(folder, directory)
        package = PACKAGE if relative == "." else f"{PACKAGE}.{relative.replace(os.sep, '.')}"
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            is_package = name == "__init__.py"
            module = package if is_package else f"{package}.{name[:-3]}"
            with open(os.path.join(folder, name), "rb") as stream:
                found[module] = (is_package, stream.read())
    return found


def entry_point() -> tuple[str, str]:
    """(module, function) of the `gpu-cdi-hook` console script, as the package declares it."""
    from importlib.metadata import entry_points

    found = entry_points(group="console_scripts", name=PROGRAM)
    if not found:
        raise LookupError(f"no {PROGRAM} entry point: gpu-cdi is not installed (pip install .)")
    (entry,) = found
    return entry.module, entry.attr


def _without_docstrings(source: bytes, filename: str) -> ast.Module:
    tree = ast.parse(source, filename)
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            value = first.value if isinstance(first, ast.Expr) else None
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                node.body = node.body[1:] or [ast.Pass()]
    return ast.fix_missing_locations(tree)


def _compile_all(sources: dict[str, tuple[bool, bytes]]) -> Table:
    table: Table = {}
    for module, (is_package, source) in sources.items():
        filename = hookboot.filename(module, is_package)
        tree = _without_docstrings(source, filename)
        code = compile(tree, filename, "exec", dont_inherit=True)
        table[module] = (is_package, zlib.compress(marshal.dumps(code), 9))
    return table


def compiled(sources: dict[str, tuple[bool, bytes]]) -> Table:
    """Each module compiled by this interpreter, as the launcher's fast table.

    Every start of the hook parses the whole file, so the code is made small: no docstrings
    (nothing reads them) and no column tables (-X no_debug_ranges: they only place the carets
    of a traceback, and the hook prints one line). That option applies to a whole interpreter,
    hence a child process of this one; -P keeps the working directory off its sys.path.
    """
    argv = [sys.executable, "-P", "-X", "no_debug_ranges", "-m", __name__]
    try:
        proc = subprocess.run(
            argv, input=marshal.dumps(sources), capture_output=True, check=False, timeout=120
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ValueError(f"compiling the hook with {sys.executable} failed: {error}") from None
    if proc.returncode != 0:
        # one line: the child's own (a syntax error names module, file and line) or the last
        # of a traceback, which names the exception
        lines = proc.stderr.decode(errors="replace").strip().splitlines() or ["no output"]
        raise ValueError(
            f"compiling the hook with {sys.executable} failed "
            f"(exit {proc.returncode}): {lines[-1].strip()}"
        )
    table: Table = marshal.loads(proc.stdout)
    return table


def _literal(data: bytes) -> str:
    text = binascii.b2a_base64(data, newline=False).decode("ascii")
    return "\n".join(text[i : i + 100] for i in range(0, len(text), 100))


# The part of the file that is source: check the interpreter, pick the tables, start the boot
# module (cdi/node/hookboot.py). Every start parses it, so it is short and plain.
LAUNCHER = '''\
#!{python} -IS
# {program} {version}, written by `gpu-cdi install-hook`: do not edit (install it again).
# The {package} package of gpu-cdi {version}, compiled by {implementation} and as source.
import sys

if sys.version_info < {min_python!r}:
    sys.stderr.write("{program}: needs Python >= {min_text}; %s is %s\\n"
                     % (sys.executable, sys.version.split()[0]))
    raise SystemExit(1)
from binascii import a2b_base64
from marshal import loads
from zlib import decompress

_COMPILED = """
{compiled}
"""
_SOURCE = """
{source}
"""
_fast = getattr(sys.modules.get("_frozen_importlib_external"), "MAGIC_NUMBER", None) == {magic!r}
if _fast:  # name -> (is_package, zlib(marshal(code)))
    _table = loads(a2b_base64(_COMPILED))
    _boot = loads(decompress(_table.pop("{boot}")[1]))
else:  # name -> (is_package, source)
    _table = loads(decompress(a2b_base64(_SOURCE)))
    _boot = compile(_table.pop("{boot}")[1], "<{program}>/boot.py", "exec", dont_inherit=True)
_scope = {{"__name__": "{boot}"}}
exec(_boot, _scope)
_scope.update(TABLE=_table, COMPILED=_fast, ENTRY="{entry}", FILE=__file__)
_scope["main"]()
'''


def render(
    python: str, version: str, sources: dict[str, tuple[bool, bytes]] | None = None
) -> bytes:
    """The whole hook file for interpreter `python` (an absolute path on the host)."""
    if not python.startswith("/") or any(c.isspace() for c in python):
        raise ValueError(f"{python!r}: the interpreter must be an absolute path without spaces")
    sources = dict(package_sources() if sources is None else sources)
    with open(hookboot.__file__, "rb") as stream:
        sources[BOOT] = (False, stream.read())
    text = LAUNCHER.format(
        python=python,
        program=PROGRAM,
        version=version,
        package=PACKAGE,
        boot=BOOT,
        entry=":".join(entry_point()),
        implementation=f"{sys.implementation.name} {sys.version.split()[0]}",
        min_python=MIN_PYTHON,
        min_text=".".join(map(str, MIN_PYTHON)),
        # The outer tables are dicts of bytes: their marshal format is that of every Python 3.
        compiled=_literal(marshal.dumps(compiled(sources))),
        source=_literal(zlib.compress(marshal.dumps(sources), 9)),
        magic=magic(),
    )
    return text.encode("ascii")


if __name__ == "__main__":  # the compiling child of `compiled`
    try:
        _table = _compile_all(marshal.loads(sys.stdin.buffer.read()))
    except SyntaxError as _error:
        sys.exit(f"{_error.filename}, line {_error.lineno}: {_error.msg}")
    sys.stdout.buffer.write(marshal.dumps(_table))
