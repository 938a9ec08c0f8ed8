"""Entry point: ``python -m model_container --bundle DIR --frontend ADDR ...``."""

from model_container.cli import main

raise SystemExit(main())
