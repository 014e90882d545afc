"""LoRA, checkpoint cadence and resume through POST /api/tunix/run, and what a run records.

The launches are real (test client, real database); local runs execute the fake
trainer (runs/tests/fake_trainer.py, `fake-train`), a real subprocess that leaves
the files the real trainer leaves, so what the registry makes of them (the
`training` record, the model artifacts, the manifest it wrote) is checked
without JAX. runs/tests/test_training_resume.py trains for real.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.test import Client

from datasets.tests.factories import dataset_with_traces
from runs.artifacts import InvalidArtifactName, artifact_name_check, artifacts_scan
from runs.manifest import manifest_yaml
from runs.models import RunEvent, RunStatus, TunixRun
from runs.outcomes import RunOutcome, pending_outcome_load, pending_outcome_save
from runs.selectors import run_directory
from runs.tests.factories import TunixRunFactory
from runs.trainer.lora import LORA_TARGETS
from runs.trainer.manifest import parse_manifest
from runs.training import training_report
from tunix_registry.tests.openapi_check import assert_fits

pytestmark = pytest.mark.django_db

URL = "/api/tunix/run"
QWEN3_TARGETS = list(LORA_TARGETS["qwen3"])


def post(client: Client, body: dict[str, Any]) -> Any:
    return client.post(URL, data=body, content_type="application/json")


def detail_of(response: Any) -> str:
    return json.dumps(response.json()["detail"])


def checkpointed_source(data_dir: Path, **fields: Any) -> TunixRun:
    """A finished local run whose output directory holds checkpoints 2 and 4."""
    lora = fields.pop("lora", None)
    model_id = fields.pop("model_id", "tiny-qwen3")
    run = TunixRunFactory.create(
        mode="local",
        status=fields.pop("status", RunStatus.CANCELLED),
        model_id=model_id,
        output_dir=fields.pop("output_dir", f"outputs/source_{uuid.uuid4().hex[:8]}"),
        config={"dataset_key": "demo-v1", "model_id": model_id, "dry_run": False, "lora": lora},
        **fields,
    )
    for step in (2, 4):
        (data_dir / run.output_dir / "checkpoints" / str(step)).mkdir(parents=True)
    return run


# --- LoRA and checkpoint cadence -----------------------------------------------------------


def test_a_lora_dry_run_adapts_every_module_of_the_family_by_default(
    client: Client, openapi: dict[str, Any]
) -> None:
    dataset_with_traces(name="demo", version="v1", count=4)
    response = post(
        client,
        {
            "dataset_key": "demo-v1",
            "model_id": "tiny-qwen3",
            "lora": {"rank": 4},
            "checkpoint_every_n_steps": 5,
        },
    )
    assert response.status_code == 200, response.content
    assert_fits(openapi, URL, "post", response)
    body = response.json()
    assert body["status"] == "completed", body["stderr"]
    assert body["lora"] == {
        "rank": 4,
        "alpha": 16.0,
        "dropout": 0.0,
        "target_modules": QWEN3_TARGETS,
        "export": "merged",
    }
    assert body["checkpoint_every_n_steps"] == 5
    assert (body["resumed_from"], body["training"]) == (None, None)
    # The preflight counted the adapter's parameters, not the whole model's.
    counted = re.search(r"Parameters: ([\d,]+), ([\d,]+) trainable \(LoRA\)", body["stdout"])
    assert counted is not None, body["stdout"]
    total, trainable = (int(group.replace(",", "")) for group in counted.groups())
    assert 0 < trainable < total
    run = TunixRun.objects.get(pk=body["run_id"])
    assert run.config["lora"]["target_modules"] == QWEN3_TARGETS
    assert run.lora == body["lora"]


def test_gemma_takes_its_own_modules_and_refuses_another_familys(client: Client) -> None:
    dataset_with_traces(name="demo", version="v1", count=4)
    body = post(
        client, {"dataset_key": "demo-v1", "model_id": "tiny-gemma3", "lora": {"rank": 2}}
    ).json()
    assert body["status"] == "completed", body["stderr"]
    assert body["lora"]["target_modules"] == list(LORA_TARGETS["gemma3"])

    refused = post(
        client,
        {
            "dataset_key": "demo-v1",
            "model_id": "tiny-qwen3",
            "lora": {"rank": 2, "target_modules": ["q_proj", "q_einsum"]},
        },
    )
    assert refused.status_code == 422
    detail = refused.json()["detail"]
    assert detail[0]["loc"] == ["body", "lora.target_modules"]
    assert "'q_einsum'" in detail[0]["msg"] and "q_proj" in detail[0]["msg"]
    assert TunixRun.objects.count() == 1


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"lora": {}}, "rank"),
        ({"lora": {"rank": 0}}, "rank"),
        ({"lora": {"rank": 257}}, "rank"),
        ({"lora": {"rank": 4, "alpha": 0}}, "alpha"),
        ({"lora": {"rank": 4, "dropout": 1.0}}, "dropout"),
        ({"lora": {"rank": 4, "target_modules": []}}, "target_modules"),
        ({"lora": {"rank": 4, "target_modules": ["attention"]}}, "target_modules"),
        ({"lora": {"rank": 4, "target_modules": ["q_proj", "q_proj"]}}, "target_modules"),
        ({"lora": {"rank": 4, "export": "gguf"}}, "export"),
        ({"lora": "yes"}, "lora"),
        ({"checkpoint_every_n_steps": 0}, "checkpoint_every_n_steps"),
        ({"checkpoint_every_n_steps": 1.5}, "checkpoint_every_n_steps"),
        ({"resume_from": "not-a-uuid"}, "resume_from"),
    ],
)
def test_bad_training_options_are_422_naming_the_field(
    client: Client, extra: dict[str, Any], field: str
) -> None:
    response = post(client, {"dataset_key": "d", "model_id": "tiny-qwen3", **extra})
    assert response.status_code == 422
    assert field in detail_of(response)
    assert TunixRun.objects.count() == 0


def test_a_manifest_without_the_new_options_is_the_original_one() -> None:
    plain = {
        "dataset_key": "demo-v1",
        "model_id": "tiny-qwen3",
        "output_dir": "/data/outputs/x",
        "learning_rate": 2e-5,
        "num_epochs": 3,
        "batch_size": 8,
        "max_seq_length": 2048,
    }
    text = manifest_yaml(**plain)  # type: ignore[arg-type]
    assert text == manifest_yaml(
        **plain,  # type: ignore[arg-type]
        checkpoint_every_n_steps=None,
        lora=None,
        resume=None,
    )
    assert list(yaml.safe_load(text)) == [
        "version",
        "runner",
        "mode",
        "model",
        "dataset",
        "training",
        "output",
    ]


def test_the_trainer_accepts_every_option_the_registry_writes(tmp_path: Path) -> None:
    lora = {
        "rank": 8,
        "alpha": 16.0,
        "dropout": 0.05,
        "target_modules": ["q_proj", "v_proj"],
        "export": "adapter",
    }
    text = manifest_yaml(
        dataset_key="demo-v1",
        model_id="tiny-qwen3",
        output_dir=str(tmp_path / "out"),
        learning_rate=2e-5,
        num_epochs=3,
        batch_size=8,
        max_seq_length=2048,
        checkpoint_every_n_steps=7,
        lora=lora,
        resume={"run_id": "r1", "checkpoint_dir": str(tmp_path / "src" / "checkpoints")},
    )
    data = yaml.safe_load(text)
    assert list(data) == [
        "version",
        "runner",
        "mode",
        "model",
        "dataset",
        "training",
        "lora",
        "resume",
        "output",
    ]
    manifest = parse_manifest(data, manifest_path=tmp_path / "manifest.yaml", environ={})
    assert manifest.checkpoint_every_n_steps == 7
    assert manifest.lora is not None and manifest.lora.as_dict() == lora
    assert manifest.resume_checkpoint_dir == tmp_path / "src" / "checkpoints"


# --- Resume ----------------------------------------------------------------------------------


def test_resume_refusals_are_422_naming_resume_from_and_create_nothing(
    client: Client, data_dir: Path
) -> None:
    dataset_with_traces(name="demo", version="v1", count=4)
    dry = TunixRunFactory.create()
    active = checkpointed_source(data_dir, status=RunStatus.RUNNING)
    bare = TunixRunFactory.create(mode="local", status=RunStatus.FAILED, output_dir="outputs/b")
    other_model = checkpointed_source(data_dir, model_id="tiny-llama3")
    lora: dict[str, Any] = {"rank": 4, "alpha": 8.0, "dropout": 0.0, "target_modules": ["q_proj"]}
    lora_run = checkpointed_source(data_dir, lora={**lora, "export": "merged"})
    full = checkpointed_source(data_dir)
    missing = uuid.uuid4()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"resume_from": str(missing)}, f"Run not found: {missing}"),
        ({"resume_from": str(dry.run_id)}, "is a dry-run"),
        ({"resume_from": str(active.run_id)}, "is still running"),
        ({"resume_from": str(bare.run_id)}, "left no checkpoint"),
        ({"resume_from": str(other_model.run_id)}, "trained model 'tiny-llama3'"),
        (
            {"resume_from": str(lora_run.run_id)},
            "trained LoRA rank 4 on q_proj; this request asks for full-weight",
        ),
        (
            {"resume_from": str(lora_run.run_id), "lora": {**lora, "rank": 8}},
            "trained LoRA rank 4 on q_proj; this request asks for LoRA rank 8 on q_proj",
        ),
        (
            {"resume_from": str(full.run_id), "lora": lora},
            "trained full-weight; this request asks for LoRA rank 4 on q_proj",
        ),
    ]
    before = TunixRun.objects.count()
    for extra, message in cases:
        response = post(client, {"dataset_key": "demo-v1", "model_id": "tiny-qwen3", **extra})
        assert response.status_code == 422, (extra, response.content)
        detail = response.json()["detail"]
        assert detail[0]["loc"] == ["body", "resume_from"]
        assert message in detail[0]["msg"], (message, detail)
    assert TunixRun.objects.count() == before


def test_a_compatible_resume_is_linked_and_its_dry_run_passes(
    client: Client, data_dir: Path
) -> None:
    dataset_with_traces(name="demo", version="v1", count=4)
    lora = {"rank": 4, "alpha": 8.0, "dropout": 0.0, "target_modules": ["v_proj", "q_proj"]}
    source = checkpointed_source(data_dir, lora={**lora, "export": "merged"})
    body = post(
        client,
        {
            "dataset_key": "demo-v1",
            "model_id": "tiny-qwen3",
            # The same shape: the order of the targets and the export do not matter.
            "lora": {**lora, "target_modules": ["q_proj", "v_proj"], "export": "adapter"},
            "resume_from": str(source.run_id),
        },
    ).json()
    assert body["status"] == "completed", body["stderr"]
    assert body["resumed_from"] == str(source.run_id)
    run = TunixRun.objects.get(pk=body["run_id"])
    assert run.resumed_from_id == source.run_id
    assert list(source.resumed_by.all()) == [run]


@pytest.mark.usefixtures("fake_trainer")
def test_a_local_resume_gives_the_trainer_the_source_checkpoints(
    client: Client, data_dir: Path, openapi: dict[str, Any]
) -> None:
    dataset_with_traces(name="demo", version="v1", count=2)
    source = checkpointed_source(data_dir, model_id="fake-train")
    response = post(
        client,
        {
            "dataset_key": "demo-v1",
            "model_id": "fake-train",
            "dry_run": False,
            "checkpoint_every_n_steps": 3,
            "resume_from": str(source.run_id),
        },
    )
    assert response.status_code == 200
    assert_fits(openapi, URL, "post", response)
    body = response.json()
    assert body["status"] == "completed", body["stderr"]
    seen = json.loads((run_directory(run_id=body["run_id"]) / "manifest.seen").read_text())
    assert seen["training"]["checkpoint_every_n_steps"] == 3
    assert "lora" not in seen
    assert seen["resume"] == {
        "run_id": str(source.run_id),
        "checkpoint_dir": str(data_dir / source.output_dir / "checkpoints"),
    }
    assert body["training"]["resumed_step"] == 4
    assert body["training"]["restore_seconds"] == 0.75


# --- What a local run records -------------------------------------------------------------------


@pytest.mark.usefixtures("fake_trainer")
def test_a_local_run_records_its_training_and_its_model_files(
    client: Client, data_dir: Path, openapi: dict[str, Any]
) -> None:
    dataset_with_traces(name="demo", version="v1", count=2)
    body = post(
        client,
        {
            "dataset_key": "demo-v1",
            "model_id": "fake-train",
            "dry_run": False,
            "lora": {"rank": 4, "target_modules": ["q_proj"], "export": "adapter"},
        },
    ).json()
    assert body["status"] == "completed", body["stderr"]
    assert body["training"] == {
        "parameters": 91456,
        "trainable_parameters": 12288,
        "total_steps": 4,
        "trained_steps": 4,
        "steps_per_second": 110.5,
        "tokens_per_second": 9000.25,
        "train_seconds": 0.5,
        "phases": {"load": 1.5, "compile": 2.0, "train": 0.5, "eval": 0.25, "save": 0.125},
        "peak_host_memory_bytes": 512 << 20,
        "peak_device_memory_bytes": None,
        "device": "cpu",
        "export_format": "adapter",
        "checkpoint_steps": [2, 4],
        "resumed_step": None,
        "restore_seconds": None,
    }
    run_id = body["run_id"]
    detail = client.get(f"/api/tunix/runs/{run_id}")
    assert_fits(openapi, "/api/tunix/runs/{run_id}", "get", detail)
    assert detail.json()["training"] == body["training"]

    out = data_dir / body["output_dir"]
    listed = client.get(f"/api/tunix/runs/{run_id}/artifacts").json()["artifacts"]
    names = [a["name"] for a in listed]
    assert names == ["run_summary.json", "model/README.md", "model/config.json"]
    card = next(a for a in listed if a["name"] == "model/README.md")
    assert card["sha256"] == hashlib.sha256((out / "model" / "README.md").read_bytes()).hexdigest()
    assert card["path"] == "model/README.md"
    download: Any = client.get(f"/api/tunix/runs/{run_id}/artifacts/model/README.md/download")
    assert download.status_code == 200
    assert 'filename="README.md"' in download["Content-Disposition"]
    assert b"".join(download.streaming_content) == f"# run {run_id}\n".encode()
    for bad in ("model/..%2Frun_summary.json", "checkpoints/2/state", "model/a%2Fb"):
        refused = client.get(f"/api/tunix/runs/{run_id}/artifacts/{bad}/download")
        assert refused.status_code == 403, bad


def test_a_dry_run_records_no_training(client: Client) -> None:
    dataset_with_traces(name="demo", version="v1", count=2)
    body = post(client, {"dataset_key": "demo-v1", "model_id": "tiny-qwen3"}).json()
    assert body["status"] == "completed"
    assert body["training"] is None
    assert TunixRun.objects.get(pk=body["run_id"]).training is None


def test_training_report_keeps_only_well_typed_figures(tmp_path: Path) -> None:
    assert training_report(tmp_path) is None
    (tmp_path / "checkpoints" / "3").mkdir(parents=True)
    (tmp_path / "checkpoints" / "not-a-step").mkdir()
    only_steps = training_report(tmp_path)
    assert only_steps is not None
    assert only_steps["checkpoint_steps"] == [3]
    assert only_steps["parameters"] is None and only_steps["phases"] is None
    (tmp_path / "run_summary.json").write_text(
        json.dumps(
            {
                "parameters": "many",
                "trainable_parameters": True,
                "steps_per_second": 2,
                "tokens_per_second": "fast",
                "device": "x" * 100,
                "phases": {"load": "slow", "train": 1},
                "resumed_from": "yesterday",
            }
        )
    )
    report = training_report(tmp_path)
    assert report is not None
    assert (report["parameters"], report["trainable_parameters"]) == (None, None)
    assert (report["steps_per_second"], report["tokens_per_second"]) == (2.0, None)
    assert report["device"] == "x" * 64
    assert report["phases"] == {
        "load": None,
        "compile": None,
        "train": 1.0,
        "eval": None,
        "save": None,
    }
    assert report["resumed_step"] is None
    (tmp_path / "run_summary.json").write_text("[1, 2]")
    assert training_report(tmp_path)["parameters"] is None  # type: ignore[index]


def test_the_kept_outcome_carries_the_training_report(data_dir: Path) -> None:
    run_id = uuid.uuid4()
    training = {"parameters": 10, "checkpoint_steps": [1, 2]}
    pending_outcome_save(
        run_id=run_id,
        outcome=RunOutcome(status="cancelled", message="m", training=training),
    )
    loaded = pending_outcome_load(run_id=run_id)
    assert loaded is not None and loaded.training == training


def test_model_files_are_artifacts_and_nothing_deeper(tmp_path: Path) -> None:
    (tmp_path / "run_summary.json").write_text("{}")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.safetensors").write_bytes(b"w")
    (tmp_path / "model" / "nested").mkdir()
    (tmp_path / "model" / "nested" / "x").write_text("x")
    (tmp_path / "checkpoints" / "1").mkdir(parents=True)
    (tmp_path / "checkpoints" / "1" / "state").write_text("s")
    assert [a["name"] for a in artifacts_scan(tmp_path)] == [
        "run_summary.json",
        "model/model.safetensors",
    ]
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "model").symlink_to(tmp_path / "model")
    assert artifacts_scan(linked) == []
    assert artifact_name_check("model/model.safetensors") == "model/model.safetensors"
    for name in ("model/", "model/..", "model/.", "model/a/b", "checkpoints/1", "model\\x"):
        with pytest.raises(InvalidArtifactName):
            artifact_name_check(name)


def test_resume_links_are_audited_like_any_launch(client: Client, data_dir: Path) -> None:
    dataset_with_traces(name="demo", version="v1", count=2)
    source = checkpointed_source(data_dir)
    body = post(
        client,
        {"dataset_key": "demo-v1", "model_id": "tiny-qwen3", "resume_from": str(source.run_id)},
    ).json()
    events = RunEvent.objects.filter(run_id=body["run_id"]).values_list("to_status", flat=True)
    assert list(events) == ["running", "completed"]


# --- Evaluation on completion ---------------------------------------------------------------


@pytest.mark.usefixtures("fake_trainer")
def test_a_completed_run_queues_the_evaluation_it_asked_for(client: Client) -> None:
    from evaluations.models import Evaluation

    dataset_with_traces(name="demo", version="v1", count=2)
    dataset_with_traces(name="probe", version="v1", count=2)
    body = post(
        client,
        {
            "dataset_key": "demo-v1",
            "model_id": "fake-train",
            "dry_run": False,
            "evaluate_on": "probe-v1",
        },
    ).json()
    assert body["status"] == "completed", body["stderr"]
    assert body["evaluate_on"] == "probe-v1"
    queued = Evaluation.objects.get(run_id=body["run_id"])
    assert (queued.status, queued.dataset_key, queued.held_out, queued.baseline) == (
        "pending",
        "probe-v1",
        False,
        False,
    )
    assert queued.launched_by is not None and queued.launched_by.username == "launcher"
    # A run that did not complete queues nothing; nor does a dry-run.
    failed = post(
        client,
        {
            "dataset_key": "demo-v1",
            "model_id": "fake-fail",
            "dry_run": False,
            "evaluate_on": "probe-v1",
        },
    ).json()
    assert failed["status"] == "failed"
    dry = post(
        client, {"dataset_key": "demo-v1", "model_id": "tiny-qwen3", "evaluate_on": "probe-v1"}
    )
    assert dry.json()["status"] == "completed"
    assert Evaluation.objects.count() == 1


@pytest.mark.parametrize(
    ("evaluate_on", "message"),
    [
        ("missing-v1", "Dataset not found: missing-v1"),
        ("held_out", "has 2 traces: a trainer holds none out below 20"),
        ("../x", "dataset_key may contain only letters"),
    ],
)
def test_an_evaluation_that_could_not_be_queued_refuses_the_launch(
    client: Client, evaluate_on: str, message: str
) -> None:
    dataset_with_traces(name="demo", version="v1", count=2)
    response = post(
        client, {"dataset_key": "demo-v1", "model_id": "tiny-qwen3", "evaluate_on": evaluate_on}
    )
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail[0]["loc"] == ["body", "evaluate_on"]
    assert message in detail[0]["msg"]
    assert not TunixRun.objects.exists()
