"""The hook as one file that runs on the host's own python3: what `gpu-cdi install-hook` writes.

The file is a short launcher (first line `#!PYTHON -IS`: no site, no user or PYTHON* paths, no
working directory on sys.path) and the `cdi.hook` package twice, each zlib-compressed and
base64-encoded in a string literal: compiled by the interpreter that installs it (marshal), and
as source. At start the launcher compares the running interpreter's bytecode magic with the
one the code was compiled for: equal, it loads the code objects; else it compiles the source,
which costs a few ms per start but runs on any Python >= MIN_PYTHON. A finder first on
sys.meta_path serves `cdi` and `cdi.hook.*` from the file only, so nothing installed on the
host can stand in for them. It calls the program's console entry point (as pip's script does),
then leaves without interpreter teardown, as `python -m cdi.hook` does.

Not a zipapp: running a zip imports runpy (with importlib.util, contextlib, functools...),
about 4 ms on every container start; this launcher costs a few hundred microseconds.
"""

from __future__ import annotations

import binascii
import marshal
import os
import sys
import zlib

PACKAGE = "cdi.hook"
PROGRAM = "gpu-cdi-hook"
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


def _filename(module: str, is_package: bool) -> str:
    # What tracebacks and co_filename show (the launcher names source-compiled modules alike).
    return "/".join([f"<{PROGRAM}>", *module.split("."), *["__init__"] * is_package]) + ".py"


def compiled(sources: dict[str, tuple[bool, bytes]]) -> Table:
    """Each module compiled by this interpreter, as the launcher's fast table."""
    table: Table = {}
    for module, (is_package, source) in sources.items():
        code = compile(source, _filename(module, is_package), "exec", dont_inherit=True)
        table[module] = (is_package, zlib.compress(marshal.dumps(code), 9))
    return table


def _literal(table: Table) -> str:
    # The outer table is a dict of bytes: its marshal format is the same on every Python 3.
    text = binascii.b2a_base64(marshal.dumps(table), newline=False).decode("ascii")
    return "\n".join(text[i : i + 100] for i in range(0, len(text), 100))


LAUNCHER = '''\
#!{python} -IS
# {program} {version}, written by `gpu-cdi install-hook`: do not edit (install it again).
# The {package} package of gpu-cdi {version}, compiled by {implementation} and as source.
import sys

if sys.version_info < {min_python!r}:
    sys.stderr.write("{program}: needs Python >= {min_text}; %s is %s\\n"
                     % (sys.executable, sys.version.split()[0]))
    raise SystemExit(1)


def _serve(fast):
    from binascii import a2b_base64
    from marshal import loads
    from zlib import decompress

    table = loads(a2b_base64(_COMPILED if fast else _SOURCE))
    spec_type = type(sys.__spec__)

    class Finder:
        @staticmethod
        def find_spec(name, path=None, target=None):
            entry = table.get(name)
            if entry is None:
                return None
            return spec_type(name, Finder, origin=__file__, is_package=entry[0])

        @staticmethod
        def create_module(spec):
            return None

        @staticmethod
        def exec_module(module):
            name = module.__name__
            data = decompress(table[name][1])
            if fast:
                code = loads(data)
            else:
                where = "/".join(["<{program}>"] + name.split(".") + ["__init__"] * table[name][0])
                code = compile(data, where + ".py", "exec", dont_inherit=True)
            exec(code, module.__dict__)

    sys.meta_path.insert(0, Finder)


_COMPILED = """
{compiled}
"""
_SOURCE = """
{source}
"""
_MAGIC = {magic!r}
_serve(getattr(sys.modules.get("_frozen_importlib_external"), "MAGIC_NUMBER", None) == _MAGIC)
from {entry_module} import {entry_function}

_code = {entry_function}()
sys.stdout.flush()
sys.stderr.flush()
# Interpreter teardown costs milliseconds per container start and has nothing left to clean up.
__import__("posix")._exit(_code)
'''


def render(
    python: str, version: str, sources: dict[str, tuple[bool, bytes]] | None = None
) -> bytes:
    """The whole hook file for interpreter `python` (an absolute path on the host)."""
    if not python.startswith("/") or any(c.isspace() for c in python):
        raise ValueError(f"{python!r}: the interpreter must be an absolute path without spaces")
    sources = package_sources() if sources is None else sources
    source_table: Table = {m: (p, zlib.compress(s, 9)) for m, (p, s) in sources.items()}
    entry_module, entry_function = entry_point()
    text = LAUNCHER.format(
        python=python,
        program=PROGRAM,
        version=version,
        package=PACKAGE,
        entry_module=entry_module,
        entry_function=entry_function,
        implementation=f"{sys.implementation.name} {sys.version.split()[0]}",
        min_python=MIN_PYTHON,
        min_text=".".join(map(str, MIN_PYTHON)),
        compiled=_literal(compiled(sources)),
        source=_literal(source_table),
        magic=magic(),
    )
    return text.encode("ascii")
