"""The project's training entry point: ``python -m runs.trainer --config manifest.yaml``.

A local run executes it as a subprocess, with the run directory as working directory. It reads the
manifest (layout in docs/training.md) and the tunix_sft JSONL it names, checks the run before
loading anything heavy (preflight.py), fine-tunes the model with Tunix's ``PeftTrainer``
(full-weight or LoRA SFT, loss masked to the model's turn; optionally resuming another run's
checkpoint), and writes:

- ``metrics.jsonl`` in the manifest's directory: one JSON object per logged step,
  ``{"step", "loss", "eval_loss", "tokens_per_second", "elapsed_seconds"}``, flushed line by line;
- ``output_dir/checkpoints/<step>/`` (orbax), ``output_dir/model/`` (a loadable checkpoint
  directory or a PEFT adapter with a model card, for Qwen3 and Llama3 models) and
  ``output_dir/run_summary.json`` (written once the run is checked, again at the end).

Exit codes (an expected failure prints one line ``error: <reason>`` on stderr, no traceback):

- 0: trained;
- 1: training failed (including a diverged loss);
- 2: bad or unreadable config, an output or resume directory outside ``TUNIX_OUTPUT_ROOTS``,
  or a resume checkpoint that is missing or of another model or LoRA shape;
- 3: dataset file missing, unreadable, empty or not valid tunix_sft;
- 4: unknown model id, or the model (or its tokenizer) could not be loaded;
- 130: interrupted (SIGINT); 143: terminated (SIGTERM).

No module of this package imports Django, and JAX and Tunix are imported only once training is
about to start, so ``--help`` and config errors are fast. See docs/training.md.
"""
