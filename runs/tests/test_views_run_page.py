"""The run page (`runs:detail`), its loss chart, and the log downloads (`runs:log`)."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from runs.metrics import metric_level
from runs.models import RunLogChunk, RunMetric, RunMode, RunStatus
from runs.selectors import run_chart_metrics, run_directory
from runs.templatetags.run_pages import duration, loss, loss_chart, nice_step
from runs.tests.factories import RunEventFactory, RunMetricFactory, TunixRunFactory

pytestmark = pytest.mark.django_db


def streamed(response: Any) -> bytes:
    return b"".join(response.streaming_content)


def test_run_page_shows_every_stored_field_and_the_configuration(client: Client) -> None:
    run = TunixRunFactory.create(
        mode=RunMode.LOCAL,
        status=RunStatus.FAILED,
        exit_code=3,
        message="Training failed",
        output_dir="outputs/run-x",
        host="gpu-box",
        pid=4242,
        stdout="step 1 loss 2.0",
        stderr="unknown model",
    )
    response = client.get(reverse("runs:detail", args=[run.run_id]))
    assert response.status_code == 200
    html = response.content.decode()
    for text in (
        str(run.run_id),
        "demo-v1",
        "tiny-qwen3",
        "outputs/run-x",
        'data-testid="run:exit-code">3<',
        'data-testid="run:message">Training failed<',
        "gpu-box pid 4242",
        "step 1 loss 2.0",
        "unknown model",
        "1.50 s",
        '<span class="status-badge status-failed" data-testid="run:status">failed</span>',
    ):
        assert text in html, text
    config = html.split('data-testid="run:config"')[1].split("</table>")[0]
    assert '<th scope="row">batch_size</th><td class="mono runs-wrap">8</td>' in config
    assert '<th scope="row">output_dir</th><td class="mono runs-wrap">—</td>' in config
    assert "Started at" in html and "<time datetime=" in html


def test_run_page_shows_the_status_events_as_a_timeline(client: Client) -> None:
    run = TunixRunFactory.create(status=RunStatus.COMPLETED)
    RunEventFactory.create(
        run=run, from_status=None, to_status=RunStatus.RUNNING, reason="launched"
    )
    RunEventFactory.create(
        run=run, from_status=RunStatus.RUNNING, to_status=RunStatus.COMPLETED, reason="done <ok>"
    )
    html = client.get(reverse("runs:detail", args=[run.run_id])).content.decode()
    timeline = html.split('data-testid="run:events"')[1].split("</ol>")[0]
    assert timeline.index("launched") < timeline.index("done &lt;ok&gt;")
    assert timeline.count("<li>") == 2
    assert '<span class="status-badge status-running">running</span> →' in timeline


def test_run_page_without_events_or_metrics(client: Client) -> None:
    run = TunixRunFactory.create()
    html = client.get(reverse("runs:detail", args=[run.run_id])).content.decode()
    assert "No status changes were recorded." in html
    assert "it has no metrics" in html
    assert 'data-testid="run:loss-chart"' not in html
    assert 'data-testid="run:logs"' not in html


def test_run_page_draws_the_loss_curve_and_the_summary(client: Client) -> None:
    run = TunixRunFactory.create(
        mode=RunMode.LOCAL,
        exit_code=0,
        metrics_steps=4,
        final_loss=1.0,
        best_eval_loss=1.4,
        tokens_per_second=1234.5,
    )
    for step, value, eval_value in (
        (10, 2.5, None),
        (20, 2.0, 1.9),
        (30, 1.5, None),
        (40, 1.0, 1.4),
    ):
        RunMetricFactory.create(run=run, step=step, loss=value, eval_loss=eval_value)
    html = client.get(reverse("runs:detail", args=[run.run_id])).content.decode()
    assert 'data-testid="run:final-loss">1.0000<' in html
    assert "1234.5" in html
    chart = html.split('data-testid="run:loss-chart"')[1].split("</figure>")[0]
    assert "<svg" in chart and 'role="img"' in chart
    train = re.search(r'data-series="loss" points="([^"]+)"', chart)
    evals = re.search(r'data-series="eval_loss" points="([^"]+)"', chart)
    assert train and evals
    train_points = [tuple(map(float, p.split(","))) for p in train.group(1).split()]
    assert len(train_points) == 4
    assert len(evals.group(1).split()) == 2
    # x grows with the step; y (SVG: down is larger) grows as the loss falls.
    assert [p[0] for p in train_points] == sorted(p[0] for p in train_points)
    assert [p[1] for p in train_points] == sorted(p[1] for p in train_points)
    assert ">step</text>" in chart and ">loss</text>" in chart
    assert "from 2.5000 to 1.0000" in chart
    assert "eval loss" in chart
    assert "Metrics by step (4)" in html


def test_loss_chart_geometry_edge_cases() -> None:
    class Row:
        def __init__(self, step: int, loss: float, eval_loss: float | None = None) -> None:
            self.step, self.loss, self.eval_loss = step, loss, eval_loss

    assert loss_chart([]) is None
    assert loss_chart([Row(1, float("nan"))]) is None
    single = loss_chart([Row(5, 2.0)])
    assert single is not None and single["train_dots"] and single["y_ticks"]
    many = loss_chart([Row(i, 10.0 / (i + 1)) for i in range(5000)])
    assert many is not None
    assert len(many["train"].split()) <= 801
    assert many["train_dots"] == []
    assert 3 <= len(many["y_ticks"]) <= 12 and 3 <= len(many["x_ticks"]) <= 12
    assert nice_step(10, 5) == 2 and nice_step(0.9, 5) == 0.2 and nice_step(7, 6) == 2
    assert duration(None) == "—" and duration(0.004) == "0.00 s"
    assert duration(125) == "2 min 05 s" and duration(7380) == "2 h 03 min"
    assert loss(None) == "—" and loss(float("inf")) == "—" and loss(0.123456) == "0.1235"


def test_log_downloads_for_a_local_run(client: Client, data_dir: Path) -> None:
    run = TunixRunFactory.create(mode=RunMode.LOCAL, exit_code=0)
    directory = run_directory(run_id=run.run_id)
    directory.mkdir(parents=True)
    full = "x" * 20_000 + "\n<end>\n"
    (directory / "stdout.log").write_text(full, encoding="utf-8")
    html = client.get(reverse("runs:detail", args=[run.run_id])).content.decode()
    assert f'href="/runs/{run.run_id}/logs/stdout.log"' in html
    assert "stderr.log" not in html  # only files that exist are offered
    response = client.get(reverse("runs:log", args=[run.run_id, "stdout"]))
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response["Content-Disposition"] == (
        f'attachment; filename="run-{run.run_id}-stdout.log"'
    )
    assert response.getvalue().decode() == full
    assert client.get(reverse("runs:log", args=[run.run_id, "stderr"])).status_code == 404


def test_log_downloads_serve_the_stored_chunks_wherever_the_run_ran(client: Client) -> None:
    # No run directory on this machine: the run executed on another worker.
    run = TunixRunFactory.create(mode=RunMode.LOCAL, exit_code=0, supervisor_host="elsewhere")
    pieces = [
        ("stdout", "step 1 <loss> 2.0\n"),
        ("stderr", "a warning\n"),
        ("marker", "[... 10 bytes left out ...]\n"),
        ("stdout", "step 2 loss 1.5 é\n"),
    ]
    for seq, (stream, text) in enumerate(pieces, start=1):
        RunLogChunk.objects.create(run=run, seq=seq, stream=stream, chunk=text)
    html = client.get(reverse("runs:detail", args=[run.run_id])).content.decode()
    assert f'href="/runs/{run.run_id}/logs/stdout.log"' in html
    assert f'href="/runs/{run.run_id}/logs/stderr.log"' in html
    response = client.get(reverse("runs:log", args=[run.run_id, "stdout"]))
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response["Content-Disposition"] == (
        f'attachment; filename="run-{run.run_id}-stdout.log"'
    )
    body = streamed(response).decode()
    assert body == "step 1 <loss> 2.0\n[... 10 bytes left out ...]\nstep 2 loss 1.5 é\n"
    stderr = client.get(reverse("runs:log", args=[run.run_id, "stderr"]))
    assert streamed(stderr) == b"a warning\n[... 10 bytes left out ...]\n"


def test_a_stream_without_chunks_of_a_run_with_chunks_is_an_empty_download(
    client: Client, data_dir: Path
) -> None:
    run = TunixRunFactory.create(mode=RunMode.LOCAL, exit_code=0)
    RunLogChunk.objects.create(run=run, seq=1, stream="stdout", chunk="only stdout\n")
    response = client.get(reverse("runs:log", args=[run.run_id, "stderr"]))
    assert response.status_code == 200
    assert streamed(response) == b""


def test_log_download_errors(client: Client) -> None:
    run = TunixRunFactory.create(mode=RunMode.LOCAL)
    run_directory(run_id=run.run_id).mkdir(parents=True)
    (run_directory(run_id=run.run_id) / "manifest.yaml").write_text("secret: no\n")
    for stream in ("manifest", "..%2Fmanifest", "stdout.log%00", "STDOUT"):
        assert client.get(f"/runs/{run.run_id}/logs/{stream}.log").status_code == 404
    assert client.get(f"/runs/{uuid.uuid4()}/logs/stdout.log").status_code == 404
    assert client.get("/runs/not-a-uuid/logs/stdout.log").status_code == 404
    # A local run whose log files are gone says so.
    html = client.get(reverse("runs:detail", args=[run.run_id])).content.decode()
    assert "not on this server any more" in html


def test_run_page_404s(client: Client) -> None:
    assert client.get(f"/runs/{uuid.uuid4()}/").status_code == 404
    assert client.get("/runs/not-a-uuid/").status_code == 404
    assert client.get("/runs/12345/").status_code == 404


def test_run_page_escapes_everything(client: Client) -> None:
    run = TunixRunFactory.create(
        dataset_key="k<i>",
        model_id="<script>alert(1)</script>",
        message="<img src=x onerror=alert(1)>",
        stdout="<script>alert(1)</script>",
        stderr="</pre><script>alert(2)</script>",
        config={"model_id": "<script>alert(3)</script>"},
    )
    html = client.get(reverse("runs:detail", args=[run.run_id])).content.decode()
    assert "<script>alert" not in html
    assert "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;/pre&gt;&lt;script&gt;alert(2)" in html


def test_launch_again_links_to_the_prefilled_panel(client: Client) -> None:
    run = TunixRunFactory.create()
    html = client.get(reverse("runs:detail", args=[run.run_id])).content.decode()
    assert f'href="/?from={run.run_id}#launch"' in html


def _long_run(steps: int, eval_every: int) -> Any:
    """A finished local run of `steps` logged steps (1, 2, ...), an eval loss every
    `eval_every`-th, stored as the supervisor stores them (with their levels)."""
    run = TunixRunFactory.create(
        mode=RunMode.LOCAL, exit_code=0, metrics_steps=steps, metrics_count=steps
    )
    RunMetric.objects.bulk_create(
        RunMetric(
            run=run,
            step=step,
            loss=10.0 / step,
            eval_loss=11.0 / step if step % eval_every == 0 else None,
            level=metric_level(step - 1),
        )
        for step in range(1, steps + 1)
    )
    return run


def test_a_long_run_is_read_thinned_with_every_eval_step_and_its_last_step() -> None:
    run = _long_run(5002, eval_every=250)
    rows = run_chart_metrics(run=run, max_points=1600)
    # 5,002 steps into at most 1,600: level 2, every 4th step from the first (1, 5, ...,
    # 5001: 1,251 rows); the 20 eval steps (250, 500, ..., 5000; none of them among
    # those) and the last step, 5002.
    expected = sorted({*range(1, 5003, 4), *range(250, 5001, 250), 5002})
    assert len(expected) == 1251 + 20 + 1
    assert [row.step for row in rows] == expected
    # At or below the limit every step is read.
    assert len(run_chart_metrics(run=run, max_points=5002)) == 5002


def test_a_long_run_page_draws_its_thinned_series_without_the_table(client: Client) -> None:
    run = _long_run(5002, eval_every=250)
    html = client.get(reverse("runs:detail", args=[run.run_id])).content.decode()
    chart = html.split('data-testid="run:loss-chart"')[1].split("</figure>")[0]
    train = re.search(r'data-series="loss" points="([^"]+)"', chart)
    evals = re.search(r'data-series="eval_loss" points="([^"]+)"', chart)
    assert train and evals
    # Every eval step is drawn; the train line ends at the last step's loss.
    assert len(evals.group(1).split()) == 20
    assert len(train.group(1).split()) <= 801
    assert "from 10.0000 to 0.0020" in chart
    assert 'data-testid="run:steps">5002<' in html
    assert "Metrics by step" not in html


def test_a_run_of_a_thousand_steps_keeps_its_table_by_step(client: Client) -> None:
    run = _long_run(1000, eval_every=100)
    html = client.get(reverse("runs:detail", args=[run.run_id])).content.decode()
    assert "Metrics by step (1000)" in html
