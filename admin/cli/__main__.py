"""``python -m admin.cli``: the ``schooner`` command."""

import sys

from admin.cli import main

sys.exit(main())
