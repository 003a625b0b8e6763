import sys

from lakecache.cli.main import main

sys.exit(main())
