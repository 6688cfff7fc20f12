import sys

from segedge.cli import main

sys.exit(main())
