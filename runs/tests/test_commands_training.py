"""manage.py tunix_run's training flags: LoRA, checkpoint cadence and resume, as in the API."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from datasets.tests.factories import dataset_with_traces
from runs.management.commands.tunix_run import Command
from runs.models import TunixRun
from runs.tests.test_api_training import checkpointed_source
from runs.trainer.lora import LORA_TARGETS

pytestmark = pytest.mark.django_db


def run_command(*args: str) -> str:
    out = StringIO()
    call_command("tunix_run", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_dry_run_with_a_lora_rank_records_the_lora_and_the_cadence() -> None:
    dataset_with_traces(count=2)
    out = run_command("demo-v1", "tiny-qwen3", "--lora-rank", "4", "--checkpoint-every", "5")
    run = TunixRun.objects.get()
    assert f"run {run.run_id}: completed (dry-run)" in out
    assert run.config["lora"] == {
        "rank": 4,
        "alpha": 16.0,
        "dropout": 0.0,
        "target_modules": list(LORA_TARGETS["qwen3"]),
        "export": "merged",
    }
    assert run.checkpoint_every_n_steps == 5
    assert run.resumed_from_id is None


def test_every_lora_flag_reaches_the_request() -> None:
    dataset_with_traces(count=2)
    run_command(
        "demo-v1",
        "tiny-qwen3",
        "--lora-rank",
        "8",
        "--lora-alpha",
        "32",
        "--lora-dropout",
        "0.1",
        "--lora-targets",
        "q_proj, v_proj,",
        "--lora-export",
        "adapter",
    )
    assert TunixRun.objects.get().lora == {
        "rank": 8,
        "alpha": 32.0,
        "dropout": 0.1,
        "target_modules": ["q_proj", "v_proj"],
        "export": "adapter",
    }


def test_without_flags_the_run_is_full_weight() -> None:
    dataset_with_traces(count=2)
    run_command("demo-v1", "tiny-qwen3")
    run = TunixRun.objects.get()
    assert (run.lora, run.checkpoint_every_n_steps, run.resumed_from_id) == (None, None, None)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lora-rank", "4", "--lora-targets", "attention"], r"--lora-targets \(lora\."),
        (["--lora-rank", "4", "--lora-targets", "q_proj,q_proj"], "--lora-targets.*twice"),
        (["--lora-rank", "4", "--lora-targets", ","], "--lora-targets.*at least 1"),
        (["--lora-rank", "4", "--lora-targets", "q_proj,q_einsum"], "--lora-targets.*q_einsum"),
        (["--lora-rank", "0"], r"--lora-rank \(lora\.rank\)"),
        (["--lora-rank", "4", "--lora-alpha", "0"], "--lora-alpha"),
        (["--lora-rank", "4", "--lora-dropout", "1"], "--lora-dropout"),
        (["--lora-alpha", "8", "--lora-targets", "q_proj"], "--lora-alpha, --lora-targets need"),
        (["--checkpoint-every", "0"], "--checkpoint-every"),
        (["--resume-from", "yesterday"], r"--resume-from \(resume_from\).*UUID"),
    ],
)
def test_bad_training_flags_are_command_errors_naming_the_flag(
    args: list[str], message: str
) -> None:
    dataset_with_traces(count=2)
    with pytest.raises(CommandError, match=message):
        run_command("demo-v1", "tiny-qwen3", *args)
    assert not TunixRun.objects.exists()


def test_resume_from_a_dry_run_is_a_command_error() -> None:
    dataset_with_traces(count=2)
    run_command("demo-v1", "tiny-qwen3")
    dry = TunixRun.objects.get()
    with pytest.raises(CommandError, match=r"invalid --resume-from .*is a dry-run"):
        run_command("demo-v1", "tiny-qwen3", "--resume-from", str(dry.run_id))
    with pytest.raises(CommandError, match="is a dry-run"):
        run_command("demo-v1", "tiny-qwen3", "--local", "--resume-from", str(dry.run_id))
    assert TunixRun.objects.count() == 1


@pytest.mark.usefixtures("tunix_missing")
def test_a_queued_run_resuming_a_checkpointed_run_records_its_source(data_dir: Path) -> None:
    source = checkpointed_source(data_dir)
    run_command(
        "demo-v1", "tiny-qwen3", "--local", "--resume-from", str(source.run_id), "--epochs", "4"
    )
    run = TunixRun.objects.exclude(pk=source.pk).get()
    assert (run.status, run.resumed_from_id) == ("pending", source.run_id)
    assert run.config["resume_from"] == str(source.run_id)


def test_help_describes_each_training_flag() -> None:
    text = " ".join(Command().create_parser("manage.py", "tunix_run").format_help().split())
    for phrase in [
        "--lora-rank R train a LoRA adapter of this rank",
        "--lora-alpha A",
        "--lora-dropout P",
        "--lora-targets MODULES with --lora-rank: comma-separated modules",
        "--lora-export {merged,adapter}",
        "--checkpoint-every N save a checkpoint every N training steps",
        "--resume-from RUN_ID continue from the last checkpoint",
    ]:
        assert phrase in text, phrase
