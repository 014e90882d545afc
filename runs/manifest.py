"""The training manifest: the YAML file a trainer is given (`--config manifest.yaml`).

POST /api/tunix/sft/manifest returns it; a local run writes it into its run directory.
"""

from __future__ import annotations

from typing import Any

import yaml

# libyaml's emitter when PyYAML has it: the same bytes as the pure-Python dump
# (runs/tests/test_services_units.py compares them), four times faster, and every
# dry-run renders a manifest.
_YAML_DUMPER: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def manifest_yaml(
    *,
    dataset_key: str,
    model_id: str,
    output_dir: str,
    learning_rate: float,
    num_epochs: int,
    batch_size: int,
    max_seq_length: int,
    checkpoint_every_n_steps: int | None = None,
    lora: dict[str, Any] | None = None,
    resume: dict[str, str] | None = None,
) -> str:
    """The manifest of one SFT run; keys in this order, as the original API wrote them.

    `checkpoint_every_n_steps` (under `training`), `lora` and `resume` are written only
    when given, so a manifest without them is byte for byte the original's
    (docs/training.md describes each).
    """
    training: dict[str, Any] = {
        "learning_rate": learning_rate,
        "num_epochs": num_epochs,
        "batch_size": batch_size,
        "max_seq_length": max_seq_length,
    }
    if checkpoint_every_n_steps is not None:
        training["checkpoint_every_n_steps"] = checkpoint_every_n_steps
    manifest: dict[str, Any] = {
        "version": "1.0",
        "runner": "tunix",
        "mode": "sft",
        "model": {"model_id": model_id},
        "dataset": {"format": "tunix_sft", "path": f"./datasets/{dataset_key}.jsonl"},
        "training": training,
    }
    if lora is not None:
        manifest["lora"] = {
            key: lora[key] for key in ("rank", "alpha", "dropout", "target_modules", "export")
        }
    if resume is not None:
        manifest["resume"] = dict(resume)
    manifest["output"] = {"output_dir": output_dir}
    return yaml.dump(
        manifest, Dumper=_YAML_DUMPER, sort_keys=False, default_flow_style=False, allow_unicode=True
    )
