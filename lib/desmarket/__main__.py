"""``python -m desmarket``: the command line of :mod:`desmarket.cli`."""

import sys

from .cli import main

sys.exit(main())
