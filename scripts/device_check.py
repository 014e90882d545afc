"""The trainer on this machine's accelerator, by hand and through a registry worker.

    scripts/device-check.sh [--cpu] [--quick] [--steps 50] [--dry-run]

Trains tiny-qwen3 and random-qwen3-0.6b, full-weight and LoRA (rank 8 on the seven projections),
about --steps steps each, twice: by hand (`python -m runs.trainer --config manifest.yaml`) and
through the registry's worker path (a throwaway SQLite registry: migrate, traces imported with
`import_traces`, a dataset built with `build_dataset`, the run queued with the service the API
calls, executed by one `manage.py run_worker`). Prints steps/s, tokens/s (both from
run_summary.json), MFU for the 0.6B model (6 x parameters x tokens/s / the GPU's peak bf16 FLOP/s,
from a table by the name nvidia-smi gives, or PEAK_TFLOPS), and the worker / by-hand ratio.

--cpu: no GPU needed (JAX on the CPU), --quick: tiny-qwen3 only, a few steps. --dry-run: print
the plan and exit. Everything lives in a temporary directory removed at the end (--keep keeps it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
SEVEN = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LORA = {"rank": 8, "alpha": 16.0, "dropout": 0.0, "target_modules": SEVEN, "export": "merged"}
BATCH = 8
# Dense bf16 tensor-core peak, TFLOP/s, by a substring of nvidia-smi's name (first match wins).
PEAK_TFLOPS = [
    ("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("GH200", 989.0), ("B200", 2250.0),
    ("A100", 312.0), ("L40S", 362.0), ("L40", 181.0), ("A40", 150.0), ("A6000", 155.0),
    ("A10G", 70.0), ("A10", 125.0), ("L4", 121.0), ("RTX 4090", 165.0), ("RTX 3090", 71.0),
    ("V100", 125.0), ("T4", 65.0),
]  # fmt: skip


def say(text: str = "") -> None:
    print(text, flush=True)


def gpu_name() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    names = [line.strip() for line in out.splitlines() if line.strip()]
    return names[0] if names else None


def peak_flops(name: str | None) -> float | None:
    override = os.environ.get("PEAK_TFLOPS", "").strip()
    if override:
        return float(override) * 1e12
    for key, tflops in PEAK_TFLOPS:
        if name and key.lower() in name.lower():
            return tflops * 1e12
    return None


def traces(path: Path, count: int, *, chars: int) -> Path:
    """`count` arithmetic traces in the API's trace format, each about `chars` characters long
    (the reasoning steps padded), so the padded sequence length is about `chars` bytes."""
    lines = []
    for n in range(count):
        a, b = 3 + n % 47, 5 + (7 * n) % 43
        steps = [{"i": 0, "type": "compute", "content": f"Add {a} and {b}"}]
        filler = f" then check {a}+{b}={a + b} again"
        text = ""
        while len(text) < max(0, chars - 120):
            text += filler
        steps.append({"i": 1, "type": "check", "content": "Verify" + text})
        trace = {
            "trace_version": "1.0",
            "prompt": f"What is {a}+{b}?",
            "final_answer": str(a + b),
            "steps": steps,
            "meta": {"source": "device-check"},
        }
        lines.append(json.dumps(trace))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def plan(args: argparse.Namespace) -> dict[str, Any]:
    models = ["tiny-qwen3"] if args.quick else ["tiny-qwen3", "random-qwen3-0.6b"]
    if args.quick:
        examples, epochs, chars, seq = 24, 1, 200, 256
    else:
        # 89 examples: 81 train, 11 batches of 8 a step... epochs to reach about --steps.
        examples, chars, seq = 89, 1000, 1024
        train = examples - max(1, int(examples * 0.1))
        epochs = max(1, round(args.steps / math.ceil(train / BATCH)))
    return {"models": models, "examples": examples, "epochs": epochs, "chars": chars, "seq": seq}


def registry_env(workdir: Path) -> None:
    os.environ["TUNIX_REGISTRY_DATA_DIR"] = str(workdir / "data")
    os.environ["DJANGO_SECRET_KEY"] = "device-check-only-secret-key"  # noqa: S105
    os.environ["DJANGO_SETTINGS_MODULE"] = "tunix_registry.settings"
    os.environ["TUNIX_REGISTRY_LOG_LEVEL"] = "WARNING"
    os.environ["TUNIX_RUN_TIMEOUT_SECONDS"] = "1800"
    os.environ.pop("DATABASE_URL", None)
    sys.path.insert(0, str(ROOT))


def manage(*argv: str) -> None:
    subprocess.run([PYTHON, "manage.py", *argv], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def wait_run(run_id: Any, timeout: float) -> Any:
    from django.db import connection

    from runs.models import TERMINAL_STATUSES, TunixRun

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = TunixRun.objects.get(pk=run_id)
        connection.close()
        if run.status in TERMINAL_STATUSES:
            return run
        time.sleep(1.0)
    raise SystemExit(f"run {run_id} did not end within {timeout:.0f} s")


def through_worker(key: str, model_id: str, lora: bool, p: dict[str, Any]) -> dict[str, Any] | None:
    """The run queued and executed by the worker; None when this registry cannot ask for it."""
    from runs.outputs import output_dir_absolute
    from runs.schemas import TunixRunRequest
    from runs.selectors import run_directory
    from runs.services import run_enqueue
    from tunix_registry.actors import COMMAND

    body: dict[str, Any] = {
        "dataset_key": key, "model_id": model_id, "dry_run": False, "num_epochs": p["epochs"],
        "batch_size": BATCH, "max_seq_length": p["seq"], "learning_rate": 3e-3,
    }  # fmt: skip
    if lora:
        if "lora" not in TunixRunRequest.model_fields:
            return None
        body["lora"] = LORA
    run = run_enqueue(request=TunixRunRequest(**body), actor=COMMAND)
    run = wait_run(run.run_id, timeout=1800)
    if run.status != "completed":
        stderr = (run_directory(run_id=run.run_id) / "stderr.log").read_text(errors="replace")
        raise SystemExit(f"worker run {run.run_id} ended {run.status}: {stderr[-1500:]}")
    summary_path = output_dir_absolute(run.output_dir) / "run_summary.json"
    summary: dict[str, Any] = json.loads(summary_path.read_text())
    summary["_run_dir"] = str(run_directory(run_id=run.run_id))
    summary["_sps"] = steps_per_second(summary)
    return summary


def by_hand(source_run_dir: Path, workdir: Path, name: str, *, lora: bool) -> dict[str, Any]:
    """The worker run's manifest and dataset, copied, trained with `python -m runs.trainer`."""
    import yaml

    from runs.execution import trainer_environment
    from runs.outputs import outputs_root

    run_dir = workdir / "hand" / name
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.copytree(source_run_dir / "datasets", run_dir / "datasets")
    doc = yaml.safe_load((source_run_dir / "manifest.yaml").read_text(encoding="utf-8"))
    output = outputs_root() / f"hand_{name}"
    doc["output"]["output_dir"] = str(output)
    if lora and "lora" not in doc:
        doc = {k: v for k, v in doc.items() if k != "output"} | {
            "lora": LORA,
            "output": doc["output"],
        }
    manifest = run_dir / "manifest.yaml"
    manifest.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    with (run_dir / "stdout.log").open("wb") as out, (run_dir / "stderr.log").open("wb") as err:
        code = subprocess.run(
            [PYTHON, "-m", "runs.trainer", "--config", str(manifest)],
            cwd=run_dir, env=trainer_environment(), stdin=subprocess.DEVNULL, stdout=out,
            stderr=err, start_new_session=True, timeout=1800, check=False,
        ).returncode  # fmt: skip
    if code != 0:
        tail = (run_dir / "stderr.log").read_text(errors="replace")[-1500:]
        raise SystemExit(f"trainer by hand exited {code}: {tail}")
    summary: dict[str, Any] = json.loads((output / "run_summary.json").read_text())
    summary["_sps"] = steps_per_second(summary)
    return summary


def steps_per_second(summary: dict[str, Any]) -> float:
    """run_summary.json's steps_per_second; from metrics.jsonl (the first step, which compiles,
    left out) for a trainer that does not report it."""
    if "_sps" in summary:
        return float(summary["_sps"])
    value = summary.get("steps_per_second")
    if value is not None:
        return float(value)
    rows = [json.loads(x) for x in Path(summary["metrics_file"]).read_text().splitlines() if x]
    steady = rows[-1]["elapsed_seconds"] - rows[0]["elapsed_seconds"]
    return (len(rows) - 1) / steady if steady > 0 else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="run on the CPU (no GPU needed)")
    parser.add_argument("--quick", action="store_true", help="tiny-qwen3 only, a few steps")
    parser.add_argument("--steps", type=int, default=50, help="about this many steps a run")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, train nothing")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    p = plan(args)
    name = None if args.cpu else gpu_name()
    peak = None if args.cpu else peak_flops(name)
    say(f"python {PYTHON}; device {'cpu (--cpu)' if args.cpu else name or 'no nvidia-smi'}; "
        f"peak {'unknown' if peak is None else f'{peak / 1e12:.0f} TFLOP/s'}")  # fmt: skip
    say(f"plan: {', '.join(p['models'])} x (full, lora) x (by hand, worker); {p['examples']} "
        f"examples of ~{p['chars']} characters, batch {BATCH}, max_seq_length {p['seq']}, "
        f"{p['epochs']} epoch(s)")  # fmt: skip
    if args.dry_run:
        return 0
    if not args.cpu and name is None:
        say("error: no NVIDIA GPU found (nvidia-smi); use --cpu to check on the CPU")
        return 2
    os.environ["JAX_PLATFORMS"] = "cpu" if args.cpu else os.environ.get("JAX_PLATFORMS", "")
    if not os.environ["JAX_PLATFORMS"]:
        del os.environ["JAX_PLATFORMS"]
    workdir = Path(tempfile.mkdtemp(prefix="device-check-"))
    registry_env(workdir)
    import django

    django.setup()
    started = time.monotonic()
    worker = None
    rows: list[dict[str, Any]] = []
    try:
        manage("migrate", "--noinput")
        manage("import_traces", str(traces(workdir / "traces.jsonl", p["examples"],
               chars=p["chars"])), "--no-progress")  # fmt: skip
        manage("build_dataset", "device", "v1", "--limit", str(p["examples"]))
        key = "device-v1"
        log = (workdir / "worker.log").open("wb")
        worker = subprocess.Popen(
            [PYTHON, "manage.py", "run_worker", "--worker-id", "device-check"],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        for model_id in p["models"]:
            source = ""
            for lora in (False, True):
                label = f"{model_id} {'lora' if lora else 'full'}"
                worked = through_worker(key, model_id, lora, p)
                source = worked["_run_dir"] if worked else source
                hand = by_hand(Path(source), workdir, label.replace(" ", "-"), lora=lora)
                rows.append({"label": label, "worker": worked, "hand": hand})
                shown = (
                    "not asked (no lora field)"
                    if worked is None
                    else (f"{steps_per_second(worked):.2f} steps/s")
                )
                say(f"{label}: worker {shown}, by hand {steps_per_second(hand):.2f} steps/s")
    finally:
        if worker is not None and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
        if args.keep:
            say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    say("\n| run | steps | by hand steps/s | worker steps/s | worker / hand | tokens/s (hand) "
        "| parameters (trainable) | MFU (hand) | device | peak device memory |")  # fmt: skip
    say("|---|---|---|---|---|---|---|---|---|---|")
    ratios = []
    for row in rows:
        hand, worked = row["hand"], row["worker"]
        h = steps_per_second(hand)
        w = steps_per_second(worked) if worked else float("nan")
        if worked:
            ratios.append(w / h)
        tokens = hand.get("tokens_per_second") or 0.0
        params = int(hand.get("parameters") or 0)
        trainable = int(hand.get("trainable_parameters") or params)
        mfu = "—"
        if peak and "0.6b" in row["label"]:
            mfu = f"{6 * params * tokens / peak * 100:.1f} %"
        memory = hand.get("peak_device_memory_bytes")
        say(f"| {row['label']} | {hand.get('trained_steps')} | {h:.2f} | {w:.2f} "
            f"| {w / h * 100:.0f} % | {tokens:,.0f} | {params:,} ({trainable:,}) | {mfu} "
            f"| {hand.get('device', '?')} | "
            f"{'—' if memory is None else f'{memory / 2**30:.2f} GiB'} |")  # fmt: skip
    ratio = f"{statistics.median(ratios) * 100:.0f} %" if ratios else "—"
    say(f"\nworker / by hand, median of {len(ratios)}: {ratio}; "
        f"MFU = 6 x parameters x real tokens/s / peak (padding not counted); "
        f"{(time.monotonic() - started) / 60:.1f} minutes")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
