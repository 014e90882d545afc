"""Dataset pages: list, build form (plain POST and htmx), dataset page; and the admin."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from datasets.models import Dataset
from datasets.tests.factories import dataset_with_traces
from traces.models import Trace
from traces.tests.factories import TraceFactory

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}
TRACE_LINK = re.compile(r'href="/traces/[0-9a-f-]{36}/"')


def _form(**fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "dataset_name": "page",
        "dataset_version": "v1",
        "selection_strategy": "latest",
        "seed": "",
        "limit": "100",
        "filter_key": ["", "", ""],
        "filter_value": ["", "", ""],
    }
    data.update(fields)
    return data


def test_list_page_shows_datasets_newest_first_and_paginates(client: Client) -> None:
    TraceFactory.create()
    from datasets.services import dataset_build

    for i in range(22):
        dataset_build(name="p", version=f"v{i:02d}")
    html = client.get("/datasets/").content.decode()
    assert html.index("p-v21") < html.index("p-v20")
    assert "p-v01" not in html
    assert 'href="?offset=20"' in html
    assert 'href="/datasets/p-v21/"' in html
    second = client.get("/datasets/?offset=20", headers=HTMX).content.decode()
    assert "<html" not in second
    assert "p-v01" in second and "p-v00" in second
    assert 'href="?offset=0"' in second
    # A nonsense offset means the first page.
    assert "p-v21" in client.get("/datasets/?offset=-5").content.decode()


def test_empty_list_page_links_to_the_build_form(client: Client) -> None:
    html = client.get("/datasets/").content.decode()
    assert "No datasets yet" in html
    assert 'href="/datasets/build/"' in html


def test_build_form_renders_with_filter_rows_and_help(client: Client) -> None:
    html = client.get("/datasets/build/").content.decode()
    assert html.count('name="filter_key"') == 3
    assert "read as JSON when it parses" in html
    assert 'hx-post="/datasets/build/"' in html
    assert 'action="/datasets/build/"' in html


def test_plain_post_builds_and_redirects_to_the_dataset(client: Client) -> None:
    TraceFactory.create_batch(3, meta={"src": "a", "n": 1})
    TraceFactory.create(meta={"src": "a", "n": "1"})
    data = _form(filter_key=["src", "n", ""], filter_value=["a", "1", ""])
    response = client.post("/datasets/build/", data, follow=True)
    assert response.redirect_chain == [("/datasets/page-v1/", 302)]
    dataset = Dataset.objects.get()
    assert dataset.filters == {"src": "a", "n": 1}
    assert dataset.trace_count == 3
    assert "Built page-v1 with 3 traces." in response.content.decode()


def test_htmx_post_shows_the_result_in_place(client: Client) -> None:
    TraceFactory.create_batch(2)
    response = client.post("/datasets/build/", _form(), headers=HTMX)
    html = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in html
    assert 'data-testid="build-result"' in html
    assert 'href="/datasets/page-v1/"' in html
    assert "with 2 traces" in html


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"dataset_name": ""}, "dataset_name", "This field is required"),
        ({"dataset_name": "a\\b"}, "dataset_name", "dataset_name: the dataset key"),
        ({"dataset_version": "../x"}, "dataset_version", "must not contain"),
        ({"selection_strategy": "random"}, "seed", "requires a seed"),
        ({"limit": "0"}, "limit", "greater than or equal to 1"),
        ({"seed": "abc", "selection_strategy": "random"}, "seed", "Enter a whole number"),
    ],
)
def test_field_errors_are_shown_next_to_their_field(
    client: Client, data_dir: Path, fields: dict[str, Any], field: str, message: str
) -> None:
    response = client.post("/datasets/build/", _form(**fields))
    assert response.status_code == 422
    html = response.content.decode()
    assert f'id="{field}-errors"' in html
    errors = html[html.index(f'id="{field}-errors"') :]
    assert message in errors[:300]
    assert not Dataset.objects.exists()
    assert list(data_dir.iterdir()) == []


def test_filter_row_errors_and_values_are_kept(client: Client) -> None:
    data = _form(filter_key=["", "src", "src"], filter_value=["x", "a", "b"])
    html = client.post("/datasets/build/", data, headers=HTMX).content.decode()
    assert "row 1 has a value but no key" in html
    assert 'value="a"' in html and 'value="b"' in html
    assert not Dataset.objects.exists()
    dup = _form(filter_key=["src", "src"], filter_value=["a", "b"])
    assert "appears twice" in client.post("/datasets/build/", dup).content.decode()


def test_existing_version_is_an_error_on_the_version_field(client: Client) -> None:
    dataset_with_traces(name="page", version="v1", count=1)
    response = client.post("/datasets/build/", _form())
    html = response.content.decode()
    assert response.status_code == 422
    assert "page-v1 already exists" in html[html.index('id="dataset_version-errors"') :]


def test_user_text_is_escaped(client: Client) -> None:
    TraceFactory.create(prompt="<script>alert(1)</script>", meta={"x": "<b>"})
    dataset_with_traces(name="esc", version="v1", count=0, filters={"x": "<b>"})
    html = client.get("/datasets/esc-v1/").content.decode()
    assert "<script>alert(1)" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&quot;&lt;b&gt;&quot;" in html
    post = client.post(
        "/datasets/build/", _form(dataset_name="<i>x"), headers=HTMX
    ).content.decode()
    assert "<i>x" not in post


def test_dataset_page_shows_stats_traces_and_downloads(client: Client) -> None:
    dataset = dataset_with_traces(count=25, meta={"src": "a"}, session_id="sess-1")
    html = client.get("/datasets/demo-v1/").content.decode()
    assert 'data-testid="dataset-stats"' in html
    assert "sess-1" in html
    for fmt in ("trace", "tunix_sft", "training_example"):
        assert f'href="/api/datasets/demo-v1/export.jsonl?format={fmt}"' in html
    first = dataset.members.get(position=0).trace_id
    assert f'href="/traces/{first}/"' in html
    assert len(TRACE_LINK.findall(html)) == 20
    page2 = client.get("/datasets/demo-v1/?offset=20", headers=HTMX).content.decode()
    assert "<html" not in page2
    assert len(TRACE_LINK.findall(page2)) == 5
    last = dataset.members.get(position=24).trace_id
    assert f'href="/traces/{last}/"' in page2


def test_dataset_page_notes_deleted_traces(client: Client) -> None:
    dataset = dataset_with_traces(count=3)
    Trace.objects.filter(id=dataset.members.get(position=0).trace_id).delete()
    html = client.get("/datasets/demo-v1/").content.decode()
    assert "(2 still exist)" in html
    assert len(TRACE_LINK.findall(html)) == 2


def test_download_links_serve_the_exports(client: Client) -> None:
    dataset_with_traces(count=2)
    response = client.get("/api/datasets/demo-v1/export.jsonl?format=trace")
    lines = response.getvalue().splitlines()
    assert len(lines) == 2
    assert json.loads(lines[0])["prompts"]


@pytest.mark.parametrize("key", ["nope-v1", "..", "a%5Cb", "%2E%2E", "x" * 300])
def test_unknown_or_invalid_dataset_pages_are_404(client: Client, data_dir: Path, key: str) -> None:
    assert client.get(f"/datasets/{key}/").status_code == 404
    assert list(data_dir.iterdir()) == []


def test_admin_lists_datasets_read_only(client: Client) -> None:
    admin = User.objects.create_superuser("admin", "a@example.com", "pw-for-tests-only")
    client.force_login(admin)
    dataset = dataset_with_traces(count=2)
    listing = client.get("/admin/datasets/dataset/")
    assert listing.status_code == 200
    assert "demo-v1" in listing.content.decode()
    page = client.get(f"/admin/datasets/dataset/{dataset.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'href="/datasets/demo-v1/"' in html
    assert 'name="_save"' not in html
    assert client.get("/admin/datasets/dataset/add/").status_code == 403
    assert client.post(f"/admin/datasets/dataset/{dataset.pk}/delete/").status_code == 403
    changed = client.post(f"/admin/datasets/dataset/{dataset.pk}/change/", {"key": "x-v1"})
    assert changed.status_code == 403
    dataset.refresh_from_db()
    assert dataset.key == "demo-v1"
