"""Checkpoints load only from TUNIX_MODEL_ROOTS: the launch (API, form, command) and the trainer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from datasets.tests.factories import dataset_with_traces
from runs.model_roots import MODEL_ID_REFUSED
from runs.models import TunixRun
from runs.selectors import run_directory
from runs.tests.test_preflight import write_checkpoint
from runs.tests.trainer_fixtures import make_run, run_trainer
from runs.trainer import models as trainer_models
from runs.trainer.errors import ModelError
from runs.trainer.manifest import model_roots

pytestmark = pytest.mark.django_db

REFUSED_BODY = {
    "detail": [{"type": "value_error", "loc": ["body", "model_id"], "msg": MODEL_ID_REFUSED}]
}


def checkpoint(directory: Path) -> Path:
    """A directory with the layout the trainer loads (config.json, weights' header, tokenizer)."""
    return write_checkpoint(directory)


@pytest.fixture
def roots(tmp_path: Path, settings: Any) -> dict[str, Path]:
    """One model root holding a checkpoint, and, outside it, what an attacker would probe."""
    root = tmp_path / "models"
    inside = checkpoint(root / "qwen-small")
    (root / "empty").mkdir()
    (root / "notes.txt").write_text("not a checkpoint")
    outside = tmp_path / "home"
    (outside / ".ssh").mkdir(parents=True)
    (outside / "secret.txt").write_text("secret")
    foreign = checkpoint(outside / "ckpt")
    (root / "to-ssh").symlink_to(outside / ".ssh")
    (root / "to-foreign").symlink_to(foreign)
    (root / "dangling").symlink_to(tmp_path / "nonexistent")
    (root / "alias").symlink_to(inside)
    settings.TUNIX_MODEL_ROOTS = [root.resolve()]
    return {"root": root.resolve(), "inside": inside.resolve(), "outside": outside}


def post(client: Client, model_id: str, **extra: Any) -> Any:
    body = {"dataset_key": "demo-v1", "model_id": model_id, **extra}
    return client.post("/api/tunix/run", data=body, content_type="application/json")


def refused_ids(roots: dict[str, Path]) -> list[str]:
    root, outside = roots["root"], roots["outside"]
    return [
        str(outside / ".ssh"),  # a directory without config.json, outside the roots
        str(outside / "missing"),  # nothing there
        str(outside / "secret.txt"),  # a file
        str(outside / "ckpt"),  # a real checkpoint, outside the roots
        str(root / "to-ssh"),  # a link inside the root to a directory outside
        str(root / "to-foreign"),  # a link inside the root to a checkpoint outside
        str(root / "dangling"),  # a link inside the root to nothing
        "to-foreign",  # the same link by name
        "dangling",
        f"{root}/../home/.ssh",  # `..` out of the root
        f"{root}/qwen-small/../../home/ckpt",
        "../home/ckpt",  # relative: from the root
        "./../home/.ssh",
        "qwen-small/../../home/ckpt",
        str(root),  # the root itself
        ".",
        "~/.ssh",
        "/nonexistent",
        "/root/.ssh",
    ]


@pytest.mark.usefixtures("fake_trainer")
@pytest.mark.parametrize("launch", ["local", "queued", "dry-run"])
def test_paths_outside_the_roots_get_one_identical_422_and_nothing_is_created(
    client: Client, roots: dict[str, Path], launch: str
) -> None:
    extra = {"dry_run": launch == "dry-run"}
    url_mode = "?mode=async" if launch == "queued" else ""
    for model_id in refused_ids(roots):
        body = {"dataset_key": "demo-v1", "model_id": model_id, **extra}
        response = client.post(
            f"/api/tunix/run{url_mode}", data=body, content_type="application/json"
        )
        assert response.status_code == 422, (model_id, response.content)
        assert response.json() == REFUSED_BODY, model_id
    assert not TunixRun.objects.exists()


@pytest.mark.parametrize(
    ("model_id", "message"),
    [
        ("{root}/empty", "checkpoint directory {root}/empty has no config.json"),
        ("empty", "checkpoint directory {root}/empty has no config.json"),
        ("{root}/absent", "checkpoint directory not found: {root}/absent"),
        ("./absent", "checkpoint directory not found: {root}/absent"),
        ("notes.txt", "checkpoint directory not found: {root}/notes.txt"),
    ],
)
def test_inside_a_root_the_launch_says_what_is_wrong_with_the_checkpoint(
    client: Client, roots: dict[str, Path], model_id: str, message: str
) -> None:
    root = str(roots["root"])
    response = post(client, model_id.format(root=root))
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "model_id"]
    assert response.json()["detail"][0]["msg"] == message.format(root=root)
    assert not TunixRun.objects.exists()


@pytest.mark.parametrize(
    "model_id",
    ["{inside}", "qwen-small", "./qwen-small", "alias", "{root}/alias", "empty/../alias"],
)
def test_a_checkpoint_inside_a_root_dry_runs_as_its_resolved_directory(
    client: Client, roots: dict[str, Path], model_id: str
) -> None:
    dataset_with_traces(name="demo", version="v1", count=2)
    given = model_id.format(inside=roots["inside"], root=roots["root"])
    response = post(client, given)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "completed"
    assert body["model_id"] == str(roots["inside"])
    assert f"Model: {roots['inside']}\n" in body["stdout"]
    run = TunixRun.objects.get(pk=body["run_id"])
    assert run.model_id == run.config["model_id"] == str(roots["inside"])


@pytest.mark.parametrize("model_id", ["tiny-qwen3", "google/gemma-2b-it", "m", "owner/name"])
def test_built_in_names_and_hub_ids_pass_unchanged(
    client: Client, roots: dict[str, Path], model_id: str
) -> None:
    dataset_with_traces(name="demo", version="v1", count=2)
    response = post(client, model_id)
    assert response.status_code == 200, response.content
    assert response.json()["model_id"] == model_id


def test_a_root_entry_shadows_the_hub_id_of_the_same_name(
    client: Client, roots: dict[str, Path]
) -> None:
    dataset_with_traces(name="demo", version="v1", count=2)
    mirrored = checkpoint(roots["root"] / "google" / "gemma-2b-it")
    assert post(client, "google/gemma-2b-it").json()["model_id"] == str(mirrored)


@pytest.mark.usefixtures("fake_trainer")
def test_the_trainer_gets_the_resolved_directory_and_the_roots(
    client: Client, roots: dict[str, Path], settings: Any
) -> None:
    dataset_with_traces(name="demo", version="v1", count=2)
    response = post(client, "qwen-small", dry_run=False)
    assert response.status_code == 200, response.content
    body = response.json()
    # The fake trainer knows no checkpoints: it names what it was given and fails.
    assert body["stderr"] == f"unknown model: {roots['inside']}\n"
    manifest = yaml.safe_load((run_directory(run_id=body["run_id"]) / "manifest.yaml").read_text())
    assert manifest["model"]["model_id"] == str(roots["inside"])

    settings.TUNIX_MODEL_ROOTS = [roots["root"], roots["outside"]]
    body = post(client, "fake-env", dry_run=False).json()
    env = json.loads((run_directory(run_id=body["run_id"]) / "env.json").read_text())
    assert env["TUNIX_MODEL_ROOTS"] == f"{roots['root']}:{roots['outside']}"


def test_the_form_shows_the_refusal_on_the_model_id_field(
    client: Client, roots: dict[str, Path]
) -> None:
    data = {
        "dataset_key": "demo-v1",
        "model_id": str(roots["outside"] / ".ssh"),
        "learning_rate": "2e-5",
        "num_epochs": "3",
        "batch_size": "8",
        "max_seq_length": "2048",
    }
    for dry_run in ({"dry_run": "on"}, {}):
        response = client.post(
            reverse("runs:home"), {**data, **dry_run}, headers={"HX-Request": "true"}
        )
        html = response.content.decode()
        assert 'data-testid="tunix:field-error-model_id"' in html
        assert "inside the model roots (TUNIX_MODEL_ROOTS)" in html
    assert not TunixRun.objects.exists()


@pytest.mark.parametrize("local", [False, True])
def test_the_command_refuses_a_path_outside_the_roots(roots: dict[str, Path], local: bool) -> None:
    args = ["demo-v1", str(roots["outside"] / ".ssh"), *(["--local"] if local else [])]
    with pytest.raises(CommandError) as refused:
        call_command("tunix_run", *args)
    assert str(refused.value) == f"invalid model_id: {MODEL_ID_REFUSED}"
    assert not TunixRun.objects.exists()


def test_an_empty_list_of_roots_allows_no_checkpoint(
    client: Client, roots: dict[str, Path], settings: Any
) -> None:
    settings.TUNIX_MODEL_ROOTS = []
    assert post(client, str(roots["inside"])).json() == REFUSED_BODY
    assert post(client, "qwen-small").status_code == 200  # a name, no longer a checkpoint


# --- the trainer's own check ---------------------------------------------------------------


def test_trainer_roots_come_from_the_environment(tmp_path: Path) -> None:
    assert model_roots({}) is None
    assert model_roots({"TUNIX_MODEL_ROOTS": ""}) == []
    assert model_roots({"TUNIX_MODEL_ROOTS": f"{tmp_path}:{tmp_path}/b"}) == [
        tmp_path.resolve(),
        tmp_path.resolve() / "b",
    ]


def test_trainer_loads_only_inside_its_roots(roots: dict[str, Path], tmp_path: Path) -> None:
    allowed = [roots["root"]]
    resolve = trainer_models.resolve_model_id
    spec = resolve(str(roots["root"] / "alias"), tmp_path, roots=allowed)
    assert (spec.kind, spec.path) == ("local", roots["inside"])
    for model_id in (str(roots["outside"] / ".ssh"), str(roots["root"] / "to-foreign"), "./run"):
        with pytest.raises(ModelError, match="is outside the model roots"):
            resolve(model_id, tmp_path, roots=allowed)
    # A name that is a directory beside the manifest is not a checkpoint there.
    (tmp_path / "owner" / "name").mkdir(parents=True)
    assert resolve("owner/name", tmp_path, roots=allowed).kind == "hub"
    assert resolve("owner/name", tmp_path).kind == "local"
    assert resolve("tiny-qwen3", tmp_path, roots=[]).kind == "tiny"


def test_trainer_subprocess_refuses_a_checkpoint_outside_its_roots(
    roots: dict[str, Path], tmp_path: Path
) -> None:
    _, manifest = make_run(tmp_path, model_id=str(roots["outside"] / "ckpt"))
    result = run_trainer(
        manifest,
        extra_env={
            "TUNIX_OUTPUT_ROOTS": str(tmp_path / "data" / "outputs"),
            "TUNIX_MODEL_ROOTS": str(roots["root"]),
        },
    )
    assert result.returncode == 4
    assert result.stderr == (
        f"error: checkpoint directory {roots['outside'] / 'ckpt'} is outside the model roots\n"
    )
