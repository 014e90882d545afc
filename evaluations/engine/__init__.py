"""The evaluation engine: ``python -m evaluations.engine --config eval.yaml``.

It reads an evaluation config (layout in docs/evaluation.md) and the tunix_sft JSONL it names,
generates an answer to every item's prompt with Tunix's sampler (batched, greedy at temperature
0), scores each answer with the named metrics of ``evaluations.metrics``, and writes, in
``output.dir``:

- ``items.jsonl``: one line per item, ``{"index", "prompt", "expected", "prediction",
  "scores": {metric: score}}``, flushed after each batch;
- ``summary.json``: the model, the dataset, the item count, every metric's mean with its 95 %
  interval, items per second and the generation settings.

Exit codes (an expected failure prints one line ``error: <reason>`` on stderr, no traceback):
0 evaluated; 1 evaluation failed; 2 bad config or output directory refused; 3 dataset missing
or not valid tunix_sft; 4 unknown model id or model load failure; 130 interrupted; 143
terminated (SIGTERM).

Models are resolved and loaded as the trainer does (``runs.trainer.models``). No module of this
package imports Django, and JAX and Tunix are imported only once the config and the dataset have
been checked.
"""
