"""``vigil store stats`` and ``vigil store prune`` on a SQLite store, through
``vigil.cli.main`` as a user runs them."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from siem.model import Event, EventQuery, Sample, make_labels
from siem.sqlite import SqliteStore
from vigil.cli import main
from vigil.settings import load_settings

DAY = 86400.0


@pytest.fixture
def now(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> float:
    """A data dir whose store holds 10 days of access and app events and samples."""
    monkeypatch.setenv("VIGIL_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("VIGIL_CONFIG", raising=False)
    at = time.time()
    events = [
        Event(f"a{n}", at - n * DAY, "shop.access", {"message": f"GET {n}"}) for n in range(10)
    ]
    events += [Event(f"p{n}", at - n * DAY, "shop.app", {"message": "x" * 2000}) for n in range(4)]
    samples = [Sample(make_labels("up", job="shop"), at - n * DAY, 1.0) for n in range(20)]
    store = SqliteStore(load_settings().store_path)
    store.write(events=events, samples=samples)
    store.close()
    return at


def stored(dataset: str) -> int:
    store = SqliteStore(load_settings().store_path)
    try:
        return len(store.search(EventQuery(dataset=dataset, limit=1000)))
    finally:
        store.close()


def test_store_stats_table(now: float, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["store", "stats"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["dataset", "events", "size", "oldest", "newest"]
    access = lines[1].split()
    assert access[:2] == ["shop.access", "10"] and access[2].endswith("B~")
    assert access[3] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 9 * DAY))
    assert lines[2].split()[:2] == ["shop.app", "4"]
    assert lines[3].split()[:2] == ["(samples)", "20"]
    assert lines[4].startswith("14 events, 1 series; store ")
    assert lines[5] == "~ estimated from the documents' length"


def test_store_stats_json(now: float, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["store", "stats", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    by_name = {d["dataset"]: d for d in stats["datasets"]}
    assert by_name["shop.access"]["events"] == 10
    assert by_name["shop.access"]["oldest"] == pytest.approx(now - 9 * DAY)
    assert by_name["shop.app"]["bytes"] > by_name["shop.access"]["bytes"]
    assert (stats["events"], stats["series"], stats["samples"]) == (14, 1, 20)
    assert stats["bytes_exact"] is False and stats["total_bytes"] > 0


def test_store_prune_dry_run_then_prune(
    now: float, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "vigil.yaml"
    config.write_text(
        "store:\n  retention:\n    default: 30d\n    shop.access: 2d12h\n  samples_retention: 15d\n"
    )
    assert main(["--config", str(config), "store", "prune", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "would remove 7 events and 5 samples"
    assert out[1].split() == ["shop.access", "7"]
    assert stored("shop.access") == 10
    assert main(["--config", str(config), "store", "prune"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "removed 7 events and 5 samples"
    assert stored("shop.access") == 3 and stored("shop.app") == 4
    assert main(["--config", str(config), "store", "prune"]) == 0
    assert capsys.readouterr().out == "removed 0 events and 0 samples\n"


def test_store_prune_size_cap_and_vacuum(
    now: float, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIGIL_STORE_MAX_BYTES", "0")
    assert main(["store", "prune", "--vacuum"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("removed 0 events and 5 samples\n")  # samples older than 15d
    assert "vacuum: the file shrank by" in out
    store = SqliteStore(load_settings().store_path)
    try:
        used = store.used_bytes()
    finally:
        store.close()
    monkeypatch.setenv("VIGIL_STORE_MAX_BYTES", str(used - 4096))
    assert main(["store", "prune", "--dry-run"]) == 0
    assert "4KiB over store.max_bytes" in capsys.readouterr().out
    assert main(["store", "prune"]) == 0
    out = capsys.readouterr().out
    assert "by the size cap" in out
    assert stored("shop.access") + stored("shop.app") < 14


def test_store_prune_bad_retention_names_file_line_and_key(
    now: float, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "vigil.yaml"
    config.write_text("store:\n  retention:\n    shop.access: 7 days\n")
    assert main(["--config", str(config), "store", "prune"]) == 2
    err = capsys.readouterr().err
    assert f"{config}:3: store.retention.shop.access: bad duration '7 days'" in err
    assert "write it like 30s, 5m, 12h, 15d" in err


def test_store_prune_vacuum_needs_sqlite(
    now: float, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIGIL_STORE_BACKEND", "memory")
    assert main(["store", "prune", "--vacuum"]) == 2
    assert "--vacuum applies to store.backend: sqlite only" in capsys.readouterr().err
