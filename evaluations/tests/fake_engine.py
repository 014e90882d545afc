"""A stand-in for the evaluation engine: the same config, files and exit codes, no model.

The registry's tests run it as TUNIX_EVALUATION_COMMAND (a real subprocess). It reads the
config and the items with the engine's own code and "predicts" the expected answer for
every even item and "no idea" for every odd one, scored with the real metrics. The
generation seed picks a behaviour: 0 as above, 7 slowly (one item per 0.2 s, for
cancellation and progress), 3 fails with exit 3 and one `error:` line.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from types import FrameType

from evaluations.engine.config import load_config
from evaluations.engine.generate import read_items
from evaluations.metrics import aggregate, metric


def _terminate(signum: int, frame: FrameType | None) -> None:
    sys.stderr.write("error: terminated (SIGTERM)\n")
    sys.exit(143)


def main() -> int:
    signal.signal(signal.SIGTERM, _terminate)
    config = load_config(sys.argv[sys.argv.index("--config") + 1])
    if config.generation.seed == 3:
        print("error: dataset line 1 is not valid tunix_sft", file=sys.stderr)
        return 3
    items = read_items(config.dataset_path)
    scorers = {name: metric(name) for name in config.metrics}
    scores: dict[str, list[float]] = {name: [] for name in config.metrics}
    print(f"model {config.model_id}: {len(items)} items", flush=True)
    with (config.output_dir / "items.jsonl").open("w", encoding="utf-8") as out:
        for item in items:
            if config.generation.seed == 7:
                time.sleep(0.2)
            prediction = f"Answer: {item.expected}" if item.index % 2 == 0 else "no idea"
            scored = {name: score(prediction, item.expected) for name, score in scorers.items()}
            for name, value in scored.items():
                scores[name].append(value)
            row = {
                "index": item.index,
                "prompt": item.prompt,
                "expected": item.expected,
                "prediction": prediction,
                "scores": scored,
            }
            out.write(json.dumps(row) + "\n")
            out.flush()
    summary = {
        "model_id": config.model_id,
        "n": len(items),
        "metrics": {name: aggregate(values) for name, values in scores.items()},
        "items_per_second": 250.0,
    }
    (config.output_dir / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
