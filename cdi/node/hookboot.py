"""The start of the installed hook: serve the `cdi.hook` package from the file, then run it.

This module travels inside the file `gpu-cdi install-hook` writes (cdi/node/hookfile.py) and
runs there, on the host's python3 under -I -S: standard library only, and nothing imported at
start that the hook does not need. The file's launcher executes this module's code, sets
TABLE, COMPILED, ENTRY and FILE, then calls `main()`. Importing it elsewhere does nothing.
"""

import sys
from marshal import loads
from zlib import decompress

TYPE_CHECKING = False  # typing costs milliseconds of start-up: for the checker only
if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec
    from types import ModuleType

# Set by the launcher: module name -> (is_package, zlib(marshal(code)) if COMPILED else source)
TABLE: "dict[str, tuple[bool, bytes]]" = {}
COMPILED = False
ENTRY = ""  # the console entry point, "module:function"
FILE = ""  # the hook file itself


def filename(module: str, is_package: bool) -> str:
    """What tracebacks and co_filename show for a module of the file."""
    return "/".join(["<gpu-cdi-hook>", *module.split("."), *["__init__"] * is_package]) + ".py"


class Finder:
    """First on sys.meta_path: the file's modules come from the file and nowhere else."""

    @staticmethod
    def find_spec(name: str, path: object = None, target: object = None) -> "ModuleSpec | None":
        entry = TABLE.get(name)
        if entry is None:
            return None
        spec_type = type(sys.__spec__)  # importlib.machinery.ModuleSpec, already loaded
        # Finder is a loader by protocol (create_module, exec_module), not by class.
        spec: ModuleSpec = spec_type(name, Finder, origin=FILE, is_package=entry[0])  # type: ignore[arg-type]
        return spec

    @staticmethod
    def create_module(spec: "ModuleSpec") -> None:
        return None

    @staticmethod
    def exec_module(module: "ModuleType") -> None:
        name = module.__name__
        is_package, data = TABLE[name]
        if COMPILED:
            code = loads(decompress(data))
        else:  # another Python than the one that installed the hook: its own bytecode
            code = compile(data, filename(name, is_package), "exec", dont_inherit=True)
        exec(code, module.__dict__)


def main() -> None:
    """Run the hook's console entry point and leave with its status, without teardown (it
    costs milliseconds per container start and has nothing left to clean up)."""
    sys.meta_path.insert(0, Finder)
    module, _, function = ENTRY.partition(":")
    status = getattr(__import__(module, fromlist=[function]), function)()
    sys.stdout.flush()
    sys.stderr.flush()
    __import__("posix")._exit(status)
