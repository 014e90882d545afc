"""The training path: the registry's worker against the trainer by hand, LoRA against
full-weight, and what resuming costs, on the tiny models and this machine's CPU.

    .venv/bin/python -m bench.training_bench [--repeat 5] [--quick]

A throwaway registry (SQLite in a temporary data directory, migrated) holding 100 generated
arithmetic traces and a dataset of them built by the product's service. Every trainer process
runs alone (never two at once), with the environment the registry gives it
(runs.execution.trainer_environment). Figures:

(a) Registry vs hand. tiny-qwen3, 100 examples (90 train), batch 8, 6 epochs = 72 steps. A run
    queued with the product's service (runs.services.run_enqueue, what POST /api/tunix/run
    ?mode=async calls) and executed by a real `manage.py run_worker` process, interleaved with
    `python -m runs.trainer --config manifest.yaml` on a copy of that run's directory. Compared:
    the trainer-reported steps_per_second of run_summary.json (medians; ratio worker / hand,
    goal >= 95 %) and the wall time (the worker's: the run's duration_seconds, claim to
    recorded end; by hand: the subprocess's).
(b) LoRA vs full-weight per step, by hand, tiny-qwen3 and tiny-llama3: LoRA rank 8, alpha 16,
    on q_proj and v_proj (PEFT's usual pair) and on all seven projections (what a request
    without target_modules adapts), against full-weight, interleaved (the order rotates each
    round); median steps_per_second.
(c) Resume cost. An original run (6 epochs) and a run resuming from its last checkpoint with
    12 epochs (the same data, so it trains steps 73..144). Time to first step: from the
    trainer process's start (Popen) to its first `step N/M` progress line, which is printed
    after the first trained step (model load, trainer set-up with any checkpoint restore,
    initial eval, and the first step's compilation included). The resumed run's figure minus
    its checkpoint-restore seconds (run_summary.json resumed_from.restore_seconds when the
    trainer reports it) against the original's; goal: within 10 %.

Each figure has its own JAX compilation cache, warmed by one uncounted run first: every counted
run is "warm" (compiles nothing new). --quick: 2 rounds, (b) on tiny-qwen3 only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
EXAMPLES = 100
EPOCHS = 6
BODY: dict[str, Any] = {
    "model_id": "tiny-qwen3",
    "dry_run": False,
    "num_epochs": EPOCHS,
    "batch_size": 8,
    "max_seq_length": 256,
    "learning_rate": 3e-3,
}
LORA = {
    "rank": 8,
    "alpha": 16.0,
    "dropout": 0.0,
    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "export": "merged",
}
# The LoRA settings figure (b) compares with full-weight training.
LORA_KINDS = {
    "lora q,v": {**LORA, "target_modules": ["q_proj", "v_proj"]},
    "lora all 7": LORA,
}
RATIO_GOAL = 0.95
RESUME_GOAL = 0.10


def say(text: str = "") -> None:
    print(text, flush=True)


def load() -> str:
    return f"{os.getloadavg()[0]:.2f}"


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# --- the registry -------------------------------------------------------------------------


@contextlib.contextmanager
def registry(workdir: Path) -> Iterator[str]:
    """Django on a fresh SQLite registry in `workdir`, migrated, with a dataset; its key."""
    data = workdir / "data"
    data.mkdir(parents=True)
    os.environ["TUNIX_REGISTRY_DATA_DIR"] = str(data)
    os.environ["DJANGO_SECRET_KEY"] = "bench-only-secret-key"
    os.environ["DJANGO_SETTINGS_MODULE"] = "tunix_registry.settings"
    os.environ["TUNIX_REGISTRY_LOG_LEVEL"] = "WARNING"
    os.environ.pop("DATABASE_URL", None)
    import django

    django.setup()
    from django.core.management import call_command

    from bench.seed import seed_dataset
    from bench.workers_bench import seed_arithmetic

    call_command("migrate", verbosity=0)
    seed_arithmetic(EXAMPLES)
    yield seed_dataset(EXAMPLES, name="arith")


@contextlib.contextmanager
def worker(workdir: Path, home: Path) -> Iterator[subprocess.Popen[bytes]]:
    """One `manage.py run_worker` (HOME: `home`, so its trainers use that JAX cache)."""
    env = dict(os.environ, HOME=str(home), TUNIX_TRAINER_COMMAND="")
    log = workdir / "worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [PYTHON, "manage.py", "run_worker", "--queues", "default", "--worker-id", "bench"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def through_worker(key: str) -> tuple[dict[str, Any], float, Path]:
    """Queue a run, wait for the worker to end it: its summary, duration and run directory."""
    from django.db import connection

    from bench.workers_bench import wait_terminal
    from runs.models import TunixRun
    from runs.outputs import output_dir_absolute
    from runs.schemas import TunixRunRequest
    from runs.selectors import run_directory
    from runs.services import run_enqueue
    from tunix_registry.actors import COMMAND

    run = run_enqueue(request=TunixRunRequest(dataset_key=key, **BODY), actor=COMMAND)
    connection.close()
    # Slow polls: the bench's queries must not take CPU from the trainer.
    status = wait_terminal(str(run.run_id), timeout=900, poll=1.0)
    run = TunixRun.objects.get(pk=run.run_id)
    directory = run_directory(run_id=run.run_id)
    if status != "completed":
        tail = (directory / "stderr.log").read_text(errors="replace")[-1500:]
        raise SystemExit(f"worker run {run.run_id} ended {status}: {tail}")
    summary = json.loads((output_dir_absolute(run.output_dir) / "run_summary.json").read_text())
    connection.close()
    return summary, float(run.duration_seconds or 0.0), directory


# --- the trainer by hand ------------------------------------------------------------------


def trainer_env(cache: Path) -> dict[str, str]:
    from runs.execution import trainer_environment

    env = trainer_environment()
    env["TUNIX_TRAINER_JAX_CACHE"] = str(cache)
    return env


def outputs_dir() -> Path:
    """The registry's outputs root: the trainer's environment allows only output dirs there."""
    from runs.outputs import outputs_root

    return Path(outputs_root())


def write_run(
    run_dir: Path, dataset: Path, *, output: Path, model_id: str = "tiny-qwen3", **extra: Any
) -> Path:
    """A run directory as the registry writes it: manifest.yaml beside datasets/<key>.jsonl."""
    from runs.tests.trainer_fixtures import manifest_dict, write_manifest

    if run_dir.exists():
        shutil.rmtree(run_dir)
    (run_dir / "datasets").mkdir(parents=True)
    shutil.copy(dataset, run_dir / "datasets" / dataset.name)
    shutil.rmtree(output, ignore_errors=True)
    doc = manifest_dict(
        model_id=model_id,
        dataset_path=f"./datasets/{dataset.name}",
        output_dir=str(output),
        learning_rate=BODY["learning_rate"],
        num_epochs=extra.pop("num_epochs", EPOCHS),
        batch_size=BODY["batch_size"],
        max_seq_length=BODY["max_seq_length"],
        **extra,
    )
    return write_manifest(run_dir, doc)


def by_hand(manifest: Path, env: dict[str, str]) -> dict[str, Any]:
    """`python -m runs.trainer --config manifest.yaml` as the registry starts it.

    Returns its run_summary.json plus `wall_seconds` (the subprocess) and `first_step_seconds`
    (process start to its first `step` progress line)."""
    doc = yaml.safe_load(manifest.read_text(encoding="utf-8"))
    started = time.perf_counter()
    first_step: float | None = None
    lines: list[str] = []
    with (manifest.parent / "stderr.log").open("wb") as err:
        proc = subprocess.Popen(
            [PYTHON, "-m", "runs.trainer", "--config", str(manifest)],
            cwd=manifest.parent, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=err, start_new_session=True, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        for line in proc.stdout:
            if first_step is None and line.startswith("step "):
                first_step = time.perf_counter() - started
            lines.append(line)
        code = proc.wait()
    wall = time.perf_counter() - started
    if code != 0:
        tail = (manifest.parent / "stderr.log").read_text(errors="replace")[-1500:]
        raise SystemExit(f"trainer exited {code} on {manifest}: {tail}")
    summary = json.loads((Path(doc["output"]["output_dir"]) / "run_summary.json").read_text())
    summary["wall_seconds"] = wall
    summary["first_step_seconds"] = first_step
    summary["stdout"] = "".join(lines)
    return summary


FALLBACKS: list[str] = []


def rate(summary: dict[str, Any]) -> float:
    """The trainer-reported steps_per_second; from metrics.jsonl (the first step left out)
    when run_summary.json has none (a trainer older than that field), which is said at the end."""
    value = summary.get("steps_per_second")
    if value is not None:
        return float(value)
    metrics = Path(summary["metrics_file"])
    rows = [json.loads(line) for line in metrics.read_text(encoding="utf-8").splitlines() if line]
    FALLBACKS.append(str(metrics))
    steady = rows[-1]["elapsed_seconds"] - rows[0]["elapsed_seconds"]
    return (len(rows) - 1) / steady if steady > 0 else float("nan")


# --- figures ------------------------------------------------------------------------------


def figure_registry(key: str, workdir: Path, rounds: int) -> list[str]:
    home = workdir / "home-a"  # the worker's HOME: its trainers' JAX cache
    cache = home / ".cache" / "tunix-registry" / "jax"
    say(f"\n## (a) registry (queued run, real worker) vs by hand: tiny-qwen3 "
        f"(load average {load()})\n")  # fmt: skip
    worker_rates: list[float] = []
    hand_rates: list[float] = []
    worker_walls: list[float] = []
    hand_walls: list[float] = []
    with worker(workdir, home):
        summary, wall, source = through_worker(key)
        say(f"warm-up through the worker (cold cache, uncounted): {summary['trained_steps']} "
            f"steps, {rate(summary):.2f} steps/s, {wall:.1f} s")  # fmt: skip
        dataset = next((source / "datasets").glob("*.jsonl"))
        say("| round | first | worker steps/s | by hand steps/s | worker wall s | hand wall s "
            "| load |")  # fmt: skip
        say("|---|---|---|---|---|---|---|")
        for n in range(1, rounds + 1):
            order = ("worker", "hand") if n % 2 else ("hand", "worker")
            got: dict[str, tuple[float, float]] = {}
            for which in order:
                if which == "worker":
                    summary, wall, _ = through_worker(key)
                    got["worker"] = rate(summary), wall
                else:
                    from runs.outputs import outputs_root

                    manifest = write_run(
                        workdir / "hand" / str(n), dataset, output=outputs_root() / f"hand_{n}"
                    )
                    summary = by_hand(manifest, dict(trainer_env(cache), HOME=str(home)))
                    got["hand"] = rate(summary), summary["wall_seconds"]
            worker_rates.append(got["worker"][0])
            hand_rates.append(got["hand"][0])
            worker_walls.append(got["worker"][1])
            hand_walls.append(got["hand"][1])
            say(f"| {n} | {order[0]} | {got['worker'][0]:.2f} | {got['hand'][0]:.2f} "
                f"| {got['worker'][1]:.1f} | {got['hand'][1]:.1f} | {load()} |")  # fmt: skip
    w, h = median(worker_rates), median(hand_rates)
    ratio = w / h
    steps = summary["trained_steps"]
    say(f"\nmedians: worker {w:.2f} steps/s, by hand {h:.2f} steps/s, "
        f"ratio {ratio * 100:.1f} %; wall worker {median(worker_walls):.1f} s, "
        f"by hand {median(hand_walls):.1f} s")  # fmt: skip
    return [
        f"| (a) trainer-reported steps/s, worker / by hand, tiny-qwen3 {steps} steps, "
        f"{rounds} each interleaved, warm cache | >= {RATIO_GOAL * 100:.0f} % | worker {w:.2f}, "
        f"by hand {h:.2f} steps/s (ranges {min(worker_rates):.2f}–{max(worker_rates):.2f}, "
        f"{min(hand_rates):.2f}–{max(hand_rates):.2f}): {ratio * 100:.1f} % "
        f"| {'yes' if ratio >= RATIO_GOAL else '**no**'} |",
        f"| (a) wall time, worker (claim to recorded end) / by hand (subprocess) | reported "
        f"| {median(worker_walls):.1f} s / {median(hand_walls):.1f} s | — |",
    ]


def figure_lora(dataset: Path, workdir: Path, rounds: int, models: list[str]) -> list[str]:
    say(f"\n## (b) LoRA (rank 8 on q,v and on all seven projections) vs full-weight, by hand "
        f"(load average {load()})\n")  # fmt: skip
    rows: list[str] = []
    kinds = ["full", *LORA_KINDS]
    for model_id in models:
        cache = workdir / f"cache-b-{model_id}"
        env = trainer_env(cache)

        def once(kind: str, n: int, model_id: str = model_id, env: dict[str, str] = env) -> float:
            name = f"{model_id}-{kind.replace(' ', '-').replace(',', '')}-{n}"
            manifest = write_run(
                workdir / "b" / name,
                dataset,
                output=outputs_dir() / "b" / name,
                model_id=model_id,
                lora=LORA_KINDS.get(kind),
            )
            return rate(by_hand(manifest, env))

        for kind in kinds:
            once(kind, 0)  # warm-ups: the cache holds every program
        rates: dict[str, list[float]] = {kind: [] for kind in kinds}
        for n in range(1, rounds + 1):
            shift = n % len(kinds)
            for kind in kinds[shift:] + kinds[:shift]:
                rates[kind].append(once(kind, n))
            figures = ", ".join(f"{kind} {rates[kind][-1]:.2f}" for kind in kinds)
            say(f"{model_id} round {n}: {figures} steps/s (load {load()})")
        full = median(rates["full"])
        for kind in LORA_KINDS:
            lora = median(rates[kind])
            rows.append(
                f"| (b) {model_id} steps/s, {kind} / full-weight, by hand, {rounds} each "
                f"interleaved, warm cache | LoRA faster | {kind} {lora:.2f}, full {full:.2f} "
                f"steps/s: {lora / full * 100:.0f} % | {'yes' if lora > full else '**no**'} |"
            )
    return rows


def figure_resume(dataset: Path, workdir: Path, rounds: int) -> list[str]:
    say(f"\n## (c) resume cost: time to first step, tiny-qwen3 (load average {load()})\n")
    env = trainer_env(workdir / "cache-c")
    output = outputs_dir() / "c"

    def pair(n: int) -> tuple[dict[str, Any], dict[str, Any]]:
        first = write_run(workdir / "c" / f"orig-{n}", dataset, output=output / f"orig-{n}")
        original = by_hand(first, env)
        checkpoints = output / f"orig-{n}" / "checkpoints"
        again = write_run(
            workdir / "c" / f"resumed-{n}",
            dataset,
            output=output / f"resumed-{n}",
            num_epochs=2 * EPOCHS,
            resume={"run_id": f"bench-{n}", "checkpoint_dir": str(checkpoints)},
        )
        return original, by_hand(again, env)

    pair(0)  # warm-up: the cache holds the programs of both
    say("| round | original to 1st step s | resumed to 1st step s | restore s "
        "| resumed − restore − original | resumed from step |")  # fmt: skip
    say("|---|---|---|---|---|---|")
    firsts: list[float] = []
    resumed: list[float] = []
    restores: list[float] = []
    for n in range(1, rounds + 1):
        original, again = pair(n)
        source = again.get("resumed_from") or {}
        restore = source.get("restore_seconds")
        first, second = original["first_step_seconds"], again["first_step_seconds"]
        firsts.append(first)
        resumed.append(second)
        if restore is not None:
            restores.append(float(restore))
        extra = second - (restore or 0.0) - first
        say(f"| {n} | {first:.2f} | {second:.2f} | "
            f"{'not reported' if restore is None else f'{restore:.2f}'} | {extra:+.2f} s "
            f"({extra / first * 100:+.1f} %) | {source.get('step')} |")  # fmt: skip
    f, r = median(firsts), median(resumed)
    restore_median = median(restores) if restores else 0.0
    cost = (r - restore_median - f) / f
    note = "" if restores else " (restore time not reported: not subtracted)"
    say(f"\nmedians: original {f:.2f} s, resumed {r:.2f} s, restore {restore_median:.2f} s: "
        f"{cost * 100:+.1f} %{note}")  # fmt: skip
    return [
        f"| (c) time to first step (process start to the first progress line), resumed minus "
        f"restore vs original, tiny-qwen3, {rounds} pairs, warm cache | < "
        f"{RESUME_GOAL * 100:.0f} % | original {f:.2f} s, resumed {r:.2f} s, restore "
        f"{restore_median:.2f} s{note}: {cost * 100:+.1f} % "
        f"| {'yes' if abs(cost) < RESUME_GOAL else '**no**'} |"
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="rounds per figure (default 5)")
    parser.add_argument("--quick", action="store_true", help="2 rounds, (b) on tiny-qwen3 only")
    parser.add_argument("--only", default="abc", help="figures to take, e.g. 'ac' (default abc)")
    args = parser.parse_args()
    rounds = 2 if args.quick else args.repeat
    models = ["tiny-qwen3"] if args.quick else ["tiny-qwen3", "tiny-llama3"]
    started = time.monotonic()
    goals: list[str] = []
    workdir = Path(tempfile.mkdtemp(prefix="training-bench-"))
    try:
        with registry(workdir) as key:
            say(f"dataset {key} ({EXAMPLES} traces); {os.cpu_count()} CPUs; load {load()}")
            if "a" in args.only:
                goals += figure_registry(key, workdir, rounds)
            from datasets.services import dataset_write_jsonl

            dataset = workdir / f"{key}.jsonl"
            dataset_write_jsonl(key=key, path=dataset, fmt="tunix_sft")
            if "b" in args.only:
                goals += figure_lora(dataset, workdir, rounds, models)
            if "c" in args.only:
                goals += figure_resume(dataset, workdir, rounds)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    command = ".venv/bin/python -m bench.training_bench" + (
        " --quick" if args.quick else f" --repeat {args.repeat}"
    )
    if FALLBACKS:
        say(f"\n**{len(FALLBACKS)} runs' run_summary.json had no steps_per_second: their steps/s "
            "are from metrics.jsonl, the first step left out**")  # fmt: skip
    say(f"\n### Goals: `{command}`\n")
    say(f"SQLite registry, CPU JAX; load average at the end {load()}; "
        f"{(time.monotonic() - started) / 60:.1f} minutes in all\n")  # fmt: skip
    say("| what | goal | figure | met |\n|---|---|---|---|")
    for row in goals:
        say(row)


if __name__ == "__main__":
    main()
