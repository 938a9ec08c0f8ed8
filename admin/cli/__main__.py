"""``python -m admin.cli``: the ``schooner`` command."""

import sys

from admin.cli import main

if __name__ == "__main__":
    sys.exit(main())
