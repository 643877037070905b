"""``python -m tfxbar.cli``: the tfxbar command line."""

import sys

from tfxbar.cli import main

sys.exit(main())
