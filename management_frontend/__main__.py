"""``python -m management_frontend --redis-url redis://127.0.0.1:6379/0 --port 1338``."""

from management_frontend.cli import main

raise SystemExit(main())
