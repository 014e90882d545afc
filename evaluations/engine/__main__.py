"""``python -m evaluations.engine --config eval.yaml``."""

import os
import signal
import sys
from types import FrameType

from evaluations.engine.cli import main
from runs.trainer.errors import EXIT_TERMINATED


def _terminate(signum: int, frame: FrameType | None) -> None:  # pragma: no cover
    # items.jsonl already holds every finished batch (flushed per batch): leave at once, as the
    # trainer does, rather than unwind through JAX threads.
    sys.stdout.flush()
    sys.stderr.write("error: terminated (SIGTERM)\n")
    sys.stderr.flush()
    os._exit(EXIT_TERMINATED)


signal.signal(signal.SIGTERM, _terminate)
raise SystemExit(main())
