from datetime import UTC, datetime, timedelta, timezone

from tunix_registry.timestamps import utc_iso


def test_utc_iso_writes_z_and_leaves_out_a_zero_fraction() -> None:
    assert utc_iso(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05Z"
    assert utc_iso(datetime(2026, 1, 2, 3, 4, 5, 60, tzinfo=UTC)) == "2026-01-02T03:04:05.000060Z"


def test_utc_iso_converts_other_zones_and_writes_the_run_suffix() -> None:
    moment = datetime(2026, 1, 2, 3, 0, 0, tzinfo=timezone(timedelta(hours=2)))
    assert utc_iso(moment, suffix="+00:00") == "2026-01-02T01:00:00+00:00"
    assert utc_iso(moment, suffix="+00:00") == moment.astimezone(UTC).isoformat()


def test_utc_iso_takes_naive_values_as_utc_and_keeps_none() -> None:
    assert utc_iso(datetime(2026, 1, 2, 3, 4, 5, 6)) == "2026-01-02T03:04:05.000006Z"
    assert utc_iso(None) is None
