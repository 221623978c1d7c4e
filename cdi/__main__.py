import sys

from cdi.cli import main

sys.exit(main())
