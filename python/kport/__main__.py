"""python -m kport: what kport-info prints (--json for machines)."""

import sys

from ._info import main

sys.exit(main(sys.argv[1:]))
