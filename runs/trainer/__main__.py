"""``python -m runs.trainer --config manifest.yaml``."""

import os
import signal
import sys
from types import FrameType

from runs.trainer.cli import main
from runs.trainer.errors import EXIT_TERMINATED


def _terminate(signum: int, frame: FrameType | None) -> None:  # pragma: no cover
    # The registry stops a run with SIGTERM. metrics.jsonl already holds every logged step (each
    # line is flushed), so leave at once: unwinding through JAX or orbax threads is not safe.
    sys.stdout.flush()
    sys.stderr.write("error: terminated (SIGTERM)\n")
    sys.stderr.flush()
    os._exit(EXIT_TERMINATED)


signal.signal(signal.SIGTERM, _terminate)
raise SystemExit(main())
