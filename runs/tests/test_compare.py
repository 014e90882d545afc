"""Runs side by side: the selector (runs.compare), `GET /api/tunix/runs/compare`, the page
(`runs:compare`) and `manage.py compare_runs`."""

from __future__ import annotations

import json
import re
import uuid
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from runs.compare import (
    InvalidComparison,
    RunsNotFound,
    config_diff,
    run_compare,
    run_ids_parse,
)
from runs.metrics import FIRST_LEVEL, metric_level
from runs.models import RunMetric, RunMode, RunStatus, TunixRun
from runs.templatetags.run_pages import compare_chart
from runs.tests.factories import RunMetricFactory, TunixRunFactory
from tunix_registry.tests.openapi_check import assert_fits

pytestmark = pytest.mark.django_db

API = "/api/tunix/runs/compare"
API_DOC_PATH = "/api/tunix/runs/compare"

TRAINING = {
    "parameters": 1_000_000,
    "trainable_parameters": 12_345,
    "total_steps": 4,
    "trained_steps": 4,
    "steps_per_second": 2.0,
    "tokens_per_second": 876.5,
    "train_seconds": 2.0,
    "phases": {"load": 0.1, "compile": 0.2, "train": 2.0, "eval": None, "save": 0.1},
    "peak_host_memory_bytes": 1024,
    "peak_device_memory_bytes": None,
    "device": "cpu",
    "export_format": "merged",
    "checkpoint_steps": [2, 4],
    "resumed_step": None,
    "restore_seconds": None,
}


def local_run(
    *, losses: list[float], config: dict[str, Any] | None = None, **fields: Any
) -> TunixRun:
    """A finished local run that logged `losses` at steps 10, 20, ... (with its summary)."""
    run = TunixRunFactory.create(
        mode=RunMode.LOCAL,
        exit_code=0,
        metrics_steps=10 * len(losses) if losses else None,
        metrics_count=len(losses) if losses else None,
        final_loss=losses[-1] if losses else None,
        best_eval_loss=min(losses) + 0.1 if losses else None,
        tokens_per_second=1000.0 if losses else None,
        **fields,
    )
    if config is not None:
        run.config = config
        run.save(update_fields=["config"])
    for n, value in enumerate(losses, start=1):
        RunMetricFactory.create(
            run=run, step=10 * n, loss=value, eval_loss=value + 0.1, level=metric_level(n - 1)
        )
    return run


def base_config(**changes: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "dataset_key": "demo-v1",
        "model_id": "tiny-qwen3",
        "dry_run": False,
        "learning_rate": 2e-5,
        "num_epochs": 3,
        "batch_size": 8,
        "lora": None,
    }
    config.update(changes)
    return config


def ids(*runs: TunixRun) -> str:
    return ",".join(str(run.run_id) for run in runs)


def detail(response: Any) -> str:
    return json.dumps(response.json()["detail"])


# --- The selector ----------------------------------------------------------------------


def test_compare_keeps_the_order_given_and_diffs_the_flattened_configuration(
    django_assert_num_queries: Any,
) -> None:
    full = local_run(losses=[3.0, 2.0], config=base_config())
    lora = local_run(
        losses=[2.5, 1.5, 1.0],
        config=base_config(
            learning_rate=1e-4,
            lora={"rank": 8, "alpha": 16.0, "target_modules": ["q_proj", "v_proj"]},
        ),
        training=TRAINING,
    )
    dry = TunixRunFactory.create(config={**base_config(), "queue": "default"})

    with django_assert_num_queries(3):
        comparison = run_compare(run_ids=[lora.run_id, dry.run_id, full.run_id])

    assert [run.run_id for run in comparison.runs] == [lora.run_id, dry.run_id, full.run_id]
    rows = {row.key: row for row in comparison.config}
    # `lora` is null in two runs and an object in one: its nested keys say so.
    assert "lora" not in rows
    assert rows["lora.rank"].values == [8, None, None] and rows["lora.rank"].differs
    assert rows["lora.target_modules"].values == [["q_proj", "v_proj"], None, None]
    assert rows["learning_rate"].values == [1e-4, 2e-5, 2e-5] and rows["learning_rate"].differs
    assert rows["queue"].values == [None, "default", None] and rows["queue"].differs
    assert rows["batch_size"].values == [8, 8, 8] and not rows["batch_size"].differs
    assert [row.key for row in comparison.config] == sorted(rows)
    assert {row.key for row in comparison.differing} == {
        "learning_rate",
        "lora.alpha",
        "lora.rank",
        "lora.target_modules",
        "queue",
    }

    first, second, third = comparison.runs
    assert [(p.step, p.loss) for p in first.series] == [(10, 2.5), (20, 1.5), (30, 1.0)]
    assert first.series[0].eval_loss == pytest.approx(2.6)
    assert second.series == [] and second.metrics is None and second.training is None
    assert [p.step for p in third.series] == [10, 20]
    assert first.training == TRAINING
    assert first.trainable_parameters == 12_345 and first.parameters == 1_000_000
    # The trainer's own figure first, else the mean of the logged steps.
    assert first.tokens_per_second == 876.5 and third.tokens_per_second == 1000.0
    assert first.metrics == {
        "steps": 30,
        "final_loss": 1.0,
        "best_eval_loss": pytest.approx(1.1),
        "tokens_per_second": 1000.0,
    }
    assert first.launched_by is None and first.mode == "local" and second.mode == "dry-run"


def test_compare_reads_three_queries_for_eight_runs_with_launchers(
    django_assert_num_queries: Any, launcher: Any
) -> None:
    runs = [local_run(losses=[2.0, 1.0], launched_by=launcher) for _ in range(8)]
    with django_assert_num_queries(3):
        comparison = run_compare(run_ids=[run.run_id for run in runs])
        assert {run.launched_by for run in comparison.runs} == {"launcher"}


def test_config_diff_tells_json_values_apart() -> None:
    rows = {
        row.key: row
        for row in config_diff(
            [
                {"flag": True, "n": 1, "same": 1, "xs": [1, 2], "nested": {}},
                {"flag": 1, "n": 2, "same": 1.0, "xs": [1, 2], "nested": {}},
            ]
        )
    }
    assert rows["flag"].differs  # true is not the number 1
    assert rows["n"].differs
    assert not rows["same"].differs  # 1 and 1.0 are the same JSON number
    assert not rows["xs"].differs
    assert rows["nested"].values == [{}, {}]


@pytest.mark.parametrize(
    ("count", "message"),
    [(0, "Too few runs to compare: 0 given"), (1, "Too few"), (9, "Too many runs to compare")],
)
def test_compare_needs_two_to_eight_runs(count: int, message: str) -> None:
    with pytest.raises(InvalidComparison, match=message):
        run_compare(run_ids=[uuid.uuid4() for _ in range(count)])


def test_compare_refuses_a_run_named_twice(django_assert_num_queries: Any) -> None:
    run, other = TunixRunFactory.create(), TunixRunFactory.create()
    with django_assert_num_queries(0), pytest.raises(InvalidComparison) as raised:
        run_compare(run_ids=[run.run_id, other.run_id, run.run_id])
    assert str(raised.value) == f"Runs named more than once: {run.run_id}"


def test_compare_lists_every_unknown_run() -> None:
    run = TunixRunFactory.create()
    unknown = [uuid.uuid4(), uuid.uuid4()]
    with pytest.raises(RunsNotFound) as raised:
        run_compare(run_ids=[unknown[0], run.run_id, unknown[1]])
    assert raised.value.run_ids == unknown
    assert str(raised.value) == f"Run not found: {unknown[0]}, {unknown[1]}"


def test_run_ids_parse_reads_a_comma_separated_list() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    assert run_ids_parse(f" {a}, {b.hex},") == [a, b]
    with pytest.raises(InvalidComparison, match="Not a run id: 'nope'"):
        run_ids_parse(f"{a},nope")
    with pytest.raises(InvalidComparison, match="…"):
        run_ids_parse("x" * 100)


def test_compare_chart_draws_one_line_per_run_with_points() -> None:
    runs = [
        local_run(losses=[3.0, 2.0, 1.0]),
        TunixRunFactory.create(),
        local_run(losses=[4.0, 0.5]),
    ]
    comparison = run_compare(run_ids=[run.run_id for run in runs])
    chart = compare_chart(comparison.runs)
    assert chart is not None
    assert [line["index"] for line in chart["lines"]] == [0, 2]
    assert [entry["drawn"] for entry in chart["legend"]] == [True, False, True]
    assert len(chart["lines"][0]["points"].split()) == 3
    log = compare_chart(comparison.runs, True)
    assert log is not None and log["log"]
    assert [tick["label"] for tick in log["y_ticks"]] == ["0.1", "0.2", "0.5", "1", "2", "5", "10"]
    empty = run_compare(run_ids=[runs[1].run_id, TunixRunFactory.create().run_id])
    assert compare_chart(empty.runs) is None


# --- GET /api/tunix/runs/compare --------------------------------------------------------


def test_api_compare_answers_the_documented_shape(client: Client, openapi: dict[str, Any]) -> None:
    first = local_run(losses=[2.0, 1.0], config=base_config(), training=TRAINING)
    second = TunixRunFactory.create(config=base_config(batch_size=16))
    response = client.get(API, {"runs": ids(second, first)})
    assert response.status_code == 200, response.content
    assert_fits(openapi, API_DOC_PATH, "get", response)
    assert "no-cache" in response["Cache-Control"]
    body = response.json()
    assert [run["run_id"] for run in body["runs"]] == [str(second.run_id), str(first.run_id)]
    assert body["runs"][0]["metrics"] is None and body["runs"][0]["series"] == []
    assert body["runs"][1]["series"] == [
        {"step": 10, "loss": 2.0, "eval_loss": 2.1},
        {"step": 20, "loss": 1.0, "eval_loss": 1.1},
    ]
    assert body["runs"][1]["training"]["trainable_parameters"] == 12_345
    assert body["runs"][1]["metrics"]["final_loss"] == 1.0
    assert body["runs"][1]["started_at"].endswith("+00:00")
    batch = next(row for row in body["config"] if row["key"] == "batch_size")
    assert batch == {"key": "batch_size", "values": [16, 8], "differs": True}


def test_api_compare_is_not_taken_for_a_run_id(openapi: dict[str, Any]) -> None:
    operation = openapi["paths"][API_DOC_PATH]["get"]
    assert {"200", "404", "422"} <= set(operation["responses"])
    assert [p["name"] for p in operation["parameters"]] == ["runs"]


@pytest.mark.parametrize(
    ("runs", "message"),
    [
        ("not-a-uuid,also-not", "Not a run id: 'not-a-uuid'"),
        ("one", "Not a run id"),
        (str(uuid.uuid4()), "Too few runs to compare: 1 given"),
        (",".join(str(uuid.uuid4()) for _ in range(9)), "Too many runs to compare: 9 given"),
        ("", "Too few runs to compare: 0 given"),
        ("a\x00b", "NUL"),
        ("x" * 334, "at most 333"),
    ],
)
def test_api_compare_refuses_a_bad_list_naming_runs(
    client: Client, openapi: dict[str, Any], runs: str, message: str
) -> None:
    response = client.get(API, {"runs": runs})
    assert response.status_code == 422
    if response.json()["detail"][0]["type"] == "value_error":
        assert_fits(openapi, API_DOC_PATH, "get", response)
    assert [item["loc"] for item in response.json()["detail"]] == [["query", "runs"]]
    assert message in detail(response)


def test_api_compare_refuses_duplicates_and_a_missing_list(client: Client) -> None:
    run, other = TunixRunFactory.create(), TunixRunFactory.create()
    response = client.get(API, {"runs": ids(run, other, run)})
    assert response.status_code == 422
    assert response.json()["detail"][0]["msg"] == f"Runs named more than once: {run.run_id}"
    missing = client.get(API)
    assert missing.status_code == 422
    assert missing.json()["detail"][0]["loc"] == ["query", "runs"]


def test_api_compare_404_names_the_unknown_runs(client: Client, openapi: dict[str, Any]) -> None:
    run = TunixRunFactory.create()
    unknown = uuid.uuid4()
    response = client.get(API, {"runs": f"{run.run_id},{unknown}"})
    assert response.status_code == 404
    assert response.json() == {"detail": f"Run not found: {unknown}"}
    assert_fits(openapi, API_DOC_PATH, "get", response)


def test_api_compare_needs_credentials(anon_client: Client) -> None:
    run, other = TunixRunFactory.create(), TunixRunFactory.create()
    assert anon_client.get(API, {"runs": ids(run, other)}).status_code == 401


# --- The page --------------------------------------------------------------------------


def page(client: Client, runs: str, **params: str) -> Any:
    return client.get(reverse("runs:compare"), {"runs": runs, **params})


def test_page_shows_the_runs_the_overlaid_curves_and_the_figures(client: Client) -> None:
    runs = [
        local_run(losses=[3.0, 2.0, 1.5], config=base_config(), training=TRAINING),
        local_run(losses=[2.8, 1.9], config=base_config(learning_rate=1e-4)),
        local_run(losses=[3.2, 2.2, 1.2, 0.9], config=base_config(batch_size=8)),
    ]
    response = page(client, ids(*runs))
    assert response.status_code == 200
    html = response.content.decode()
    for run in runs:
        assert f'href="{reverse("runs:detail", args=[run.run_id])}"' in html
    chart = html.split('data-testid="compare:chart"')[1].split("</figure>")[0]
    assert len(re.findall(r"<polyline ", chart)) == 3
    assert [len(points.split()) for points in re.findall(r'points="([^"]+)"', chart)] == [3, 2, 4]
    legend = chart.split('data-testid="compare:legend"')[1].split("</ul>")[0]
    assert legend.count("<li") == 3
    assert str(runs[2].run_id)[:8] in legend
    figures = html.split('data-testid="compare:figures"')[1].split("</table>")[0]
    assert "12345" in figures and "876.5" in figures and "1000.0" in figures
    assert 'data-testid="compare:final-loss">1.5000<' in figures
    assert 'data-testid="compare:final-loss">0.9000<' in figures


def test_page_highlights_the_differing_configuration_rows_only(client: Client) -> None:
    first = local_run(losses=[1.0], config=base_config())
    second = local_run(losses=[1.0], config=base_config(learning_rate=1e-3, lora={"rank": 4}))
    html = page(client, ids(first, second)).content.decode()
    config = html.split('data-testid="compare:config"')[1].split("</table>")[0]
    found = re.findall(r'<tr( class="differs")? data-key="([^"]+)"', config)
    keys = {key: bool(marker) for marker, key in found}
    assert keys["learning_rate"] is True
    assert keys["lora.rank"] is True
    assert keys["batch_size"] is False and keys["model_id"] is False
    assert "2 of " in html.split('data-testid="compare:config-summary"')[1].split("</p>")[0]


def test_page_log_scale_link_toggles_the_axis(client: Client) -> None:
    first = local_run(losses=[3.0, 0.3])
    second = local_run(losses=[2.0, 0.2])
    linear = page(client, ids(first, second)).content.decode()
    link = re.search(r'href="([^"]+)" data-testid="compare:scale">Log scale<', linear)
    assert link is not None
    url = link.group(1).replace("&amp;", "&")
    assert "scale=log" in url and ids(first, second).replace(",", "%2C") in url
    log = client.get(url).content.decode()
    assert ">loss (log)</text>" in log
    assert ">0.1</text>" in log and ">1</text>" in log
    back = re.search(r'href="([^"]+)" data-testid="compare:scale">Linear scale<', log)
    assert back is not None and "scale=" not in back.group(1)


def test_page_escapes_hostile_values(client: Client) -> None:
    hostile = "<script>alert(1)</script>"
    first = local_run(
        losses=[1.0],
        config=base_config(model_id=hostile, note={"deep": "<img src=x onerror=alert(2)>"}),
        model_id=hostile,
    )
    second = local_run(losses=[1.0], config=base_config())
    html = page(client, ids(first, second)).content.decode()
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'data-key="note.deep"' in html


@pytest.mark.parametrize(
    ("runs", "message"),
    [
        (
            "<script>alert(1)</script>,x",
            "Not a run id: &#x27;&lt;script&gt;alert(1)&lt;/script&gt;&#x27;",
        ),
        (str(uuid.uuid4()), "Too few runs to compare: 1 given"),
        (",".join(str(uuid.uuid4()) for _ in range(9)), "Too many runs to compare: 9 given"),
        ("a\x00b", "Null characters are not allowed"),
    ],
)
def test_page_bad_input_is_a_400_saying_why(client: Client, runs: str, message: str) -> None:
    response = page(client, runs)
    assert response.status_code == 400
    html = response.content.decode()
    error = html.split('data-testid="compare:error"')[1].split("</div>")[0]
    assert message in error
    assert "<script>alert" not in html


def test_page_refuses_a_run_named_twice_and_404s_unknown_runs(client: Client) -> None:
    run, other = TunixRunFactory.create(), TunixRunFactory.create()
    twice = page(client, ids(run, other, run))
    assert twice.status_code == 400
    assert f"Runs named more than once: {run.run_id}" in twice.content.decode()
    unknown = uuid.uuid4()
    missing = page(client, f"{run.run_id},{unknown}")
    assert missing.status_code == 404
    assert f"Run not found: {unknown}" in missing.content.decode()


def test_page_without_runs_offers_the_box(client: Client) -> None:
    response = client.get(reverse("runs:compare"))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-testid="compare:form"' in html and 'data-testid="compare:error"' not in html
    assert reverse("runs:compare") == "/runs/compare/"


def test_page_of_runs_without_metrics_says_so(client: Client) -> None:
    first, second = TunixRunFactory.create(), TunixRunFactory.create()
    html = page(client, ids(first, second)).content.decode()
    assert 'data-testid="compare:no-chart"' in html and "<polyline" not in html


def test_page_needs_a_signed_in_user(anon_client: Client) -> None:
    run, other = TunixRunFactory.create(), TunixRunFactory.create()
    response = anon_client.get(reverse("runs:compare"), {"runs": ids(run, other)})
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


# --- manage.py compare_runs -------------------------------------------------------------


def compare_runs(*args: str) -> str:
    out = StringIO()
    call_command("compare_runs", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_command_prints_one_column_per_run_and_the_differing_keys() -> None:
    first = local_run(losses=[2.0, 1.25], config=base_config(), training=TRAINING)
    second = local_run(
        losses=[1.5], config=base_config(learning_rate=1e-4), status=RunStatus.FAILED
    )
    output = compare_runs(str(first.run_id), str(second.run_id))
    lines = output.splitlines()
    assert lines[0] == f"run 1: {first.run_id}" and lines[1] == f"run 2: {second.run_id}"
    header = lines[3]
    assert f"1 {str(first.run_id)[:8]}" in header and f"2 {str(second.run_id)[:8]}" in header

    def row(label: str) -> list[str]:
        line = next(line for line in lines if line.startswith(label + " "))
        return line[len(label) :].split()

    assert row("status") == ["completed", "failed"]
    assert row("model") == ["tiny-qwen3", "tiny-qwen3"]
    assert row("dataset") == ["demo-v1", "demo-v1"]
    assert row("learning_rate") == ["2e-05", "0.0001"]
    assert row("final loss") == ["1.2500", "1.5000"]
    assert row("tokens/s") == ["876.5", "1000.0"]
    assert row("trainable parameters") == ["12,345", "—"]
    assert not any(line.startswith("batch_size") for line in lines)
    assert lines[-1] == "1 of 7 configuration keys differ (--all shows every key)"


def test_command_all_shows_every_key() -> None:
    first = local_run(losses=[1.0], config=base_config())
    second = local_run(losses=[1.0], config=base_config(batch_size=32))
    output = compare_runs(f"{first.run_id},{second.run_id}", "--all")
    lines = output.splitlines()
    assert any(line.startswith("≠ batch_size") for line in lines)
    assert any(line.startswith("num_epochs ") for line in lines)
    assert lines[-1] == "1 of 7 configuration keys differ"


def test_command_errors_are_the_selectors_messages() -> None:
    run = TunixRunFactory.create()
    unknown = uuid.uuid4()
    with pytest.raises(CommandError, match=f"Run not found: {unknown}"):
        compare_runs(str(run.run_id), str(unknown))
    with pytest.raises(CommandError, match="Too few runs to compare: 1 given"):
        compare_runs(str(run.run_id))
    with pytest.raises(CommandError, match="Runs named more than once"):
        compare_runs(str(run.run_id), str(run.run_id))
    with pytest.raises(CommandError, match="Not a run id: 'bogus'"):
        compare_runs(str(run.run_id), "bogus")


def test_rows_ticked_in_the_history_redirect_to_their_comparison(client: Client) -> None:
    first, second = TunixRunFactory.create_batch(2)
    history = client.get("/?history=1").content.decode()
    for run in (first, second):
        assert f'name="run" value="{run.run_id}" form="compare-runs"' in history
    assert f'<form id="compare-runs" method="get" action="{reverse("runs:compare")}"' in history
    response = client.get(
        reverse("runs:compare"), {"run": [str(first.run_id), str(second.run_id)], "scale": "log"}
    )
    assert response.status_code == 302
    assert response["Location"] == (
        f"{reverse('runs:compare')}?runs={first.run_id}%2C{second.run_id}&scale=log"
    )
    # One ticked row is not a comparison: the page says so.
    single = client.get(reverse("runs:compare"), {"run": str(first.run_id)}, follow=True)
    assert single.status_code == 400


def test_a_drawing_reads_every_kth_step_of_a_long_run_and_its_last() -> None:
    long = local_run(losses=[3.0 - i / 1000 for i in range(26)])
    short = local_run(losses=[2.0, 1.5, 1.0])
    full = run_compare(run_ids=[long.run_id, short.run_id])
    drawn = run_compare(run_ids=[long.run_id, short.run_id], max_points=10)
    steps = [point.step for point in full.runs[0].series]
    assert len(steps) == 26
    # 26 steps into at most 10 points: level 2, the first row and every 4th (rows 1, 5, ...,
    # 25, 7 of them), then the last step.
    assert [point.step for point in drawn.runs[0].series] == [*steps[::4], steps[-1]]
    assert len(steps[::4]) == 7
    assert drawn.runs[1].series == full.runs[1].series


def test_runs_of_one_length_share_a_level_and_an_uncounted_run_is_read_whole() -> None:
    first = local_run(losses=[3.0 - i / 100 for i in range(21)])
    second = local_run(losses=[2.0 - i / 100 for i in range(21)])
    drawn = run_compare(run_ids=[first.run_id, second.run_id], max_points=10)
    # 21 steps into at most 10 points: level 2 (rows 1, 5, 9, 13, 17, 21), the last among them.
    expected = [10 * row for row in [1, 5, 9, 13, 17, 21]]
    assert [point.step for point in drawn.runs[0].series] == expected
    assert [point.step for point in drawn.runs[1].series] == expected
    # A run whose steps were never counted (metrics_count null) is drawn from every step.
    TunixRun.objects.filter(pk=second.pk).update(metrics_count=None)
    drawn = run_compare(run_ids=[first.run_id, second.run_id], max_points=10)
    assert [point.step for point in drawn.runs[0].series] == expected
    assert len(drawn.runs[1].series) == 21


def test_the_stored_count_is_the_number_of_steps_ingested() -> None:
    from runs.logs import run_metrics_store
    from runs.metrics import metrics_summary

    run = TunixRunFactory.create(mode=RunMode.LOCAL, status=RunStatus.RUNNING)
    series = [
        {
            "step": step,
            "loss": 1.0,
            "eval_loss": None,
            "tokens_per_second": None,
            "elapsed_seconds": None,
        }
        for step in (5, 10, 15)
    ]
    assert metrics_summary(series)["metrics_count"] == 3
    run_metrics_store(run_id=run.run_id, rows=series[:2], series=series[:2])
    run.refresh_from_db()
    assert (run.metrics_count, run.metrics_steps) == (2, 10)
    run_metrics_store(run_id=run.run_id, rows=series[2:], series=series)
    run.refresh_from_db()
    assert (run.metrics_count, RunMetric.objects.filter(run=run).count()) == (3, 3)
    # Each row has the level of its position in the series: positions 0, 1 and 2 are the
    # first, one with no trailing zero bit and one with one.
    levels = dict(RunMetric.objects.filter(run=run).values_list("step", "level"))
    assert levels == {5: FIRST_LEVEL, 10: 0, 15: 1}


def test_levels_pick_the_first_row_and_every_power_of_two_th() -> None:
    levels = [metric_level(position) for position in range(9)]
    assert levels == [FIRST_LEVEL, 0, 1, 0, 2, 0, 1, 0, 3]
    for level in range(4):
        kept = [position for position, value in enumerate(levels) if value >= level]
        assert kept == list(range(0, 9, 2**level))
