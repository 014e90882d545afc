"""``python -m runs.trainer --config manifest.yaml``."""

from runs.trainer.cli import main

raise SystemExit(main())
