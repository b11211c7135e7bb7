"""``python -m vfe``: the same as the ``vfe`` command."""

import sys

from .cli import main

sys.exit(main())
