"""``python -m training``: the same as ``cdss-train``."""

import sys

from training.cli import main

sys.exit(main())
