"""The run page's Training panel and the launch form's Advanced group (LoRA, checkpoints, resume).

Runs with a `training` record are made with the factory (what the trainer reported is
stored as the run ends; runs/tests/test_api_training.py covers how); launches from the
form are real dry-runs of tiny-qwen3, which need no GPU.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from datasets.tests.factories import dataset_with_traces
from runs.models import RunMode, RunStatus, TunixRun
from runs.tests.factories import TunixRunFactory
from runs.tests.test_api_training import checkpointed_source
from runs.tests.test_views_panel import form_data
from runs.trainer.lora import LORA_TARGETS

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}
LORA: dict[str, Any] = {
    "rank": 8,
    "alpha": 32.0,
    "dropout": 0.05,
    "target_modules": ["q_proj", "v_proj"],
    "export": "adapter",
}


def training(**overrides: Any) -> dict[str, Any]:
    report: dict[str, Any] = {
        "parameters": 1_000_000,
        "trainable_parameters": 25_000,
        "total_steps": 12,
        "trained_steps": 12,
        "steps_per_second": 3.5,
        "tokens_per_second": 1234.5,
        "train_seconds": 3.43,
        "phases": {"load": 1.25, "compile": 2.5, "train": 3.43, "eval": None, "save": 0.5},
        "peak_host_memory_bytes": 3 * 1024**3,
        "peak_device_memory_bytes": None,
        "device": "cpu",
        "export_format": "adapter",
        "checkpoint_steps": [4, 8, 12],
        "resumed_step": None,
        "restore_seconds": None,
    }
    report.update(overrides)
    return report


def local_run(**fields: Any) -> TunixRun:
    lora = fields.pop("lora", None)
    cadence = fields.pop("checkpoint_every_n_steps", None)
    config = {
        "dataset_key": "demo-v1",
        "model_id": "tiny-qwen3",
        "output_dir": None,
        "dry_run": False,
        "learning_rate": 0.001,
        "num_epochs": 2,
        "batch_size": 4,
        "max_seq_length": 512,
        "queue": None,
        "lora": lora,
        "checkpoint_every_n_steps": cadence,
        "resume_from": None,
    }
    fields.setdefault("training", training())
    return TunixRunFactory.create(mode=RunMode.LOCAL, exit_code=0, config=config, **fields)


def page(client: Client, run: TunixRun) -> str:
    response = client.get(reverse("runs:detail", args=[run.run_id]))
    assert response.status_code == 200
    return response.content.decode()


def after(html: str, testid: str, length: int = 300) -> str:
    marker = f'data-testid="{testid}"'
    assert marker in html, testid
    return html.split(marker, 1)[1][:length]


# --- The Training panel ----------------------------------------------------------------------


def test_training_panel_shows_what_the_trainer_reported(client: Client) -> None:
    html = page(client, local_run(lora=LORA, checkpoint_every_n_steps=4))
    assert "1,000,000 total, 25,000 trainable (2.50 %)" in after(html, "run:parameters")
    assert ">12 of 12</dd>" in after(html, "run:trained-steps")
    facts = after(html, "run:training-facts", 3000)
    assert "3.50" in facts and "1234.5" in facts
    phases = after(html, "run:phases")
    assert "load 1.25 s, compile 2.50 s, train 3.43 s, save 0.50 s" in phases
    assert "eval" not in phases.split("</dd>")[0]  # not reported: not shown
    assert "3.0\xa0GB" in after(html, "run:host-memory")
    assert ">—</dd>" in after(html, "run:device-memory")
    assert ">cpu</dd>" in after(html, "run:device")
    assert ">adapter</dd>" in after(html, "run:export-format")
    assert ">4, 8, 12</dd>" in after(html, "run:checkpoint-steps")
    assert ">4 steps</dd>" in after(html, "run:checkpoint-every")


def test_device_memory_is_human_readable_when_reported(client: Client) -> None:
    html = page(client, local_run(training=training(peak_device_memory_bytes=512 * 1024**2)))
    assert "512.0\xa0MB" in after(html, "run:device-memory")


def test_lora_panel_shows_the_settings_and_full_weight_says_so(client: Client) -> None:
    html = page(client, local_run(lora=LORA))
    lora = after(html, "run:lora", 800)
    assert ">8</dd>" in lora and "32.0" in lora and "0.05" in lora
    assert "q_proj, v_proj" in after(html, "run:lora-modules")
    assert ">adapter</dd>" in after(html, "run:lora-export")
    assert 'data-testid="run:full-weight"' not in html

    html = page(client, local_run())
    assert 'data-testid="run:full-weight"' in html
    assert 'data-testid="run:lora"' not in html
    assert "the trainer's default" in after(html, "run:checkpoint-every")


def test_a_dry_run_without_training_options_has_no_training_panel(client: Client) -> None:
    html = page(client, TunixRunFactory.create())
    assert 'data-testid="run:training"' not in html


def test_resumed_run_links_its_source_with_step_and_restore_time(client: Client) -> None:
    source = local_run()
    resumed = local_run(
        resumed_from=source, training=training(resumed_step=8, restore_seconds=0.75)
    )
    html = page(client, resumed)
    line = after(html, "run:resumed-from")
    assert f'href="{reverse("runs:detail", args=[source.run_id])}"' in line
    assert f"{source.run_id}</a> at step 8 (restore 0.75 s)" in line


def test_source_lists_the_runs_that_resumed_it(client: Client) -> None:
    source = local_run()
    first = local_run(resumed_from=source)
    second = local_run(resumed_from=source, status=RunStatus.FAILED)
    local_run()  # resumed nothing
    html = page(client, source)
    listed = after(html, "run:resumed-by", 2000).split("</ul>")[0]
    assert listed.count("<li>") == 2
    for run in (first, second):
        assert f'href="{reverse("runs:detail", args=[run.run_id])}"' in listed
    assert "status-failed" in listed
    assert 'data-testid="run:resumed-by"' not in page(client, first)


@pytest.mark.parametrize(
    ("fields", "resumable"),
    [
        ({}, True),
        ({"status": RunStatus.FAILED}, True),
        ({"status": RunStatus.CANCELLED}, True),
        ({"training": training(checkpoint_steps=[])}, False),
        ({"training": None}, False),
        ({"status": RunStatus.RUNNING}, False),
    ],
)
def test_resume_button_only_for_a_finished_local_run_with_checkpoints(
    client: Client, fields: dict[str, Any], resumable: bool
) -> None:
    run = local_run(**fields)
    html = page(client, run)
    assert ('data-testid="run:resume"' in html) is resumable
    if resumable:
        assert f'href="/?from={run.run_id}&amp;resume=1#launch"' in html
        assert "last checkpoint (step 12)" in html


def test_no_resume_button_on_a_dry_run(client: Client) -> None:
    run = TunixRunFactory.create(training=training())
    assert 'data-testid="run:resume"' not in page(client, run)


def test_resume_opens_the_form_prefilled_with_the_run_and_resume_from(client: Client) -> None:
    run = local_run(lora=LORA, checkpoint_every_n_steps=4)
    response = client.get(reverse("runs:home"), {"from": str(run.run_id), "resume": "1"})
    assert response.status_code == 200
    html = response.content.decode()
    assert f"Pre-filled from run {run.run_id} to resume from its last checkpoint" in html
    assert 'data-testid="tunix:advanced" open' in html
    for name, value in [
        ("dataset_key", "demo-v1"),
        ("model_id", "tiny-qwen3"),
        ("learning_rate", "0.001"),
        ("num_epochs", "2"),
        ("batch_size", "4"),
        ("max_seq_length", "512"),
        ("lora_rank", "8"),
        ("lora_alpha", "32.0"),
        ("lora_dropout", "0.05"),
        ("checkpoint_every_n_steps", "4"),
        ("resume_from", str(run.run_id)),
    ]:
        assert f'name="{name}" value="{value}"' in html, name
    assert '<option value="adapter" selected>' in html
    for module in LORA_TARGETS["qwen3"]:
        checkbox = html.split(f'value="{module}"', 1)[1][:40]
        assert ("checked" in checkbox) is (module in LORA["target_modules"]), module
    assert "checked" not in html.split('name="dry_run"')[1][:60]
    assert TunixRun.objects.count() == 1


def test_launch_again_of_a_full_weight_run_leaves_advanced_closed(client: Client) -> None:
    run = TunixRunFactory.create()
    html = client.get(reverse("runs:home"), {"from": str(run.run_id)}).content.decode()
    assert 'data-testid="tunix:advanced">' in html
    assert 'name="resume_from" value=' not in html


# --- The launch form's Advanced group --------------------------------------------------------


def test_form_post_with_lora_makes_a_run_with_the_lora_and_cadence(client: Client) -> None:
    dataset_with_traces(name="demo", version="v1", count=3)
    response = client.post(
        reverse("runs:home"),
        form_data(
            lora_rank="4",
            lora_alpha="8",
            lora_target_modules=["q_proj", "v_proj"],
            lora_export="adapter",
            checkpoint_every_n_steps="5",
        ),
        headers=HTMX,
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert after(html, "tunix:run-status", 40).startswith(">completed<"), html
    run = TunixRun.objects.get()
    assert run.config["lora"] == {
        "rank": 4,
        "alpha": 8.0,
        "dropout": 0.0,
        "target_modules": ["q_proj", "v_proj"],
        "export": "adapter",
    }
    assert run.lora == run.config["lora"]
    assert run.checkpoint_every_n_steps == 5
    assert run.resumed_from_id is None


def test_form_post_with_a_rank_alone_adapts_the_familys_modules(client: Client) -> None:
    dataset_with_traces(name="demo", version="v1", count=3)
    client.post(reverse("runs:home"), form_data(lora_rank="2", lora_export=""), headers=HTMX)
    run = TunixRun.objects.get()
    assert run.lora is not None
    assert run.lora["target_modules"] == list(LORA_TARGETS["qwen3"])
    assert run.lora["export"] == "merged"
    assert run.checkpoint_every_n_steps is None


def test_form_post_without_advanced_values_is_full_weight(client: Client) -> None:
    dataset_with_traces(name="demo", version="v1", count=3)
    client.post(
        reverse("runs:home"),
        form_data(lora_rank="", lora_alpha="", lora_dropout="", lora_export=""),
        headers=HTMX,
    )
    run = TunixRun.objects.get()
    assert (run.lora, run.checkpoint_every_n_steps, run.config["resume_from"]) == (None, None, None)


def field_error(html: str, field: str) -> str:
    return after(html, f"tunix:field-error-{field}", 400)


@pytest.mark.parametrize(
    "overrides",
    [
        {"lora_alpha": "8"},
        {"lora_dropout": "0.1"},
        {"lora_target_modules": ["q_proj"]},
        {"lora_export": "adapter"},
    ],
)
def test_lora_options_without_a_rank_are_an_error_on_the_rank(
    client: Client, overrides: dict[str, Any]
) -> None:
    response = client.post(reverse("runs:home"), form_data(**overrides), headers=HTMX)
    html = response.content.decode()
    assert "Give a LoRA rank" in field_error(html, "lora_rank")
    assert 'data-testid="tunix:advanced" open' in html
    assert not TunixRun.objects.exists()


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"lora_rank": "0"}, "lora_rank", "greater than or equal to 1"),
        ({"lora_rank": "257"}, "lora_rank", "less than or equal to 256"),
        ({"lora_rank": "4", "lora_alpha": "0"}, "lora_alpha", "greater than 0"),
        ({"lora_rank": "4", "lora_dropout": "1"}, "lora_dropout", "less than 1"),
        ({"lora_rank": "4", "lora_target_modules": ["attention"]}, "lora_target_modules", ""),
        ({"lora_rank": "4", "lora_export": "gguf"}, "lora_export", "not one of"),
        ({"checkpoint_every_n_steps": "0"}, "checkpoint_every_n_steps", "greater than or equal"),
        ({"resume_from": "not-a-run"}, "resume_from", "valid UUID"),
    ],
)
def test_bad_advanced_values_are_errors_on_their_field(
    client: Client, overrides: dict[str, Any], field: str, message: str
) -> None:
    response = client.post(reverse("runs:home"), form_data(**overrides))
    assert response.status_code == 422
    assert message in field_error(response.content.decode(), field)
    assert not TunixRun.objects.exists()


def test_modules_of_another_family_are_an_error_on_the_modules(client: Client) -> None:
    dataset_with_traces(name="demo", version="v1", count=3)
    response = client.post(
        reverse("runs:home"),
        form_data(lora_rank="4", lora_target_modules=["q_proj", "q_einsum"]),
    )
    assert response.status_code == 422
    error = field_error(response.content.decode(), "lora_target_modules")
    assert "family has no module &#x27;q_einsum&#x27;" in error
    assert not TunixRun.objects.exists()


def test_resume_from_refusals_are_an_error_on_resume_from(client: Client, data_dir: Path) -> None:
    dataset_with_traces(name="demo", version="v1", count=3)
    dry = TunixRunFactory.create()
    lora_source = checkpointed_source(data_dir, lora={**LORA, "export": "merged"})
    missing = uuid.uuid4()
    for resume_from, message in [
        (missing, f"Run not found: {missing}"),
        (dry.run_id, "is a dry-run"),
        (lora_source.run_id, "this request asks for full-weight"),
    ]:
        response = client.post(reverse("runs:home"), form_data(resume_from=str(resume_from)))
        assert response.status_code == 422
        assert message in field_error(response.content.decode(), "resume_from")
    assert TunixRun.objects.count() == 2


def test_a_dry_run_resuming_a_checkpointed_run_records_its_source(
    client: Client, data_dir: Path
) -> None:
    dataset_with_traces(name="demo", version="v1", count=3)
    source = checkpointed_source(data_dir)
    response = client.post(
        reverse("runs:home"), form_data(resume_from=str(source.run_id)), headers=HTMX
    )
    assert response.status_code == 200
    run = TunixRun.objects.exclude(pk=source.pk).get()
    assert run.resumed_from_id == source.run_id
    html = page(client, run)
    assert f"{source.run_id}</a>" in after(html, "run:resumed-from")
    assert str(run.run_id) in after(page(client, source), "run:resumed-by", 800)


# --- Escaping ----------------------------------------------------------------------------------


def test_hostile_training_values_are_escaped(client: Client) -> None:
    hostile = "<script>alert(1)</script>"
    run = local_run(
        lora={**LORA, "target_modules": [hostile], "export": hostile},
        training=training(device=hostile, export_format="<img src=x onerror=alert(2)>"),
    )
    html = page(client, run)
    assert "<script>alert(1)" not in html
    assert "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in after(html, "run:device")
    assert "&lt;img src=x" in after(html, "run:export-format")
    assert "&lt;script&gt;" in after(html, "run:lora-modules")


def test_the_poll_of_a_run_that_ended_swaps_in_its_training_panel(client: Client) -> None:
    run = local_run(status=RunStatus.RUNNING, training=None)
    html = page(client, run)
    assert "reports its figures" in after(html, "run:training", 2000)
    TunixRun.objects.filter(pk=run.pk).update(status=RunStatus.COMPLETED, training=training())
    cursor: dict[str, str | int] = {"since_seq": 0, "status": RunStatus.RUNNING}
    response = client.get(reverse("runs:live", args=[run.run_id]), cursor, headers=HTMX)
    live = response.content.decode()
    assert 'id="run-training"' in live
    assert 'data-testid="run:training" hx-swap-oob="true"' in live
    assert ">4, 8, 12</dd>" in after(live, "run:checkpoint-steps")
    assert 'data-testid="run:resume"' in live
