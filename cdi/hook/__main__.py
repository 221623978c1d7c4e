"""`python -m cdi.hook`, or the fast form `python -I -S /path/to/cdi/hook/__main__.py`."""

import os
import sys

if not __package__:
    # Run by file path under -I -S (no site, no script dir on sys.path): put the directory that
    # holds the `cdi` package first so the import below finds this copy and nothing else.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from cdi.hook.main import main

code = main()
sys.stdout.flush()
sys.stderr.flush()
# Interpreter teardown costs 2-3 ms per container start and has nothing left to clean up.
os._exit(code)
