"""A stand-in trainer for bench/workers_bench.py: it records when it started and prints one line.

    python bench/workers_trainer.py SECONDS --config <manifest>   (TUNIX_TRAINER_COMMAND)

First thing: its wall-clock start (`time.time()`) into `workers_started` in its working
directory (the run directory); then one stdout line `bench-line <time.time()>` at the moment it
is printed; then it stays alive SECONDS (so the line reaches the database through the
supervisor's periodic shipping, not through the final flush when the trainer ends) and exits 0.
"""

import sys
import time

started = time.time()
with open("workers_started", "w", encoding="utf-8") as out:
    out.write(repr(started))
print(f"bench-line {time.time():.6f}", flush=True)
time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1] != "--config" else 2.5)
