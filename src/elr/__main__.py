"""Entry point for `python -m elr`."""

import sys

from .cli import main

sys.exit(main())
