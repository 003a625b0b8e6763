"""``python -m lakecache.library COMPONENT ARGS...``."""

import sys

from lakecache.library.cli import dispatch

raise SystemExit(dispatch(sys.argv[1:]))
