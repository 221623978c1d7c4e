"""`python -m cdi.hook`, or the fast form `python -I -S /path/to/cdi/hook/__main__.py`."""

import sys

if not __package__:
    # Run by file path under -I -S (no site, no script dir on sys.path): put the directory that
    # holds the `cdi` package first so the import below finds this copy and nothing else.
    # posix, not os: os is not loaded under -I -S and costs ~1 ms (see cdi/hook/sysos.py).
    import posix

    here = __file__ if __file__.startswith("/") else f"{posix.getcwd()}/{__file__}"
    sys.path.insert(0, here.rsplit("/", 3)[0])  # .../cdi/hook/__main__.py -> ...

from cdi.hook import sysos
from cdi.hook.main import main

code = main()
sys.stdout.flush()
sys.stderr.flush()
# Interpreter teardown costs 2-3 ms per container start and has nothing left to clean up.
sysos._exit(code)
