"""Recording load-test runs: the comparison with the last passing run, the baseline
search over result files, and the ``loadtest.run`` event — all without locust."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

import loadtests.cli
from loadtests.compare import Regression, compare_runs, comparison_table
from loadtests.gates import Gate, GateResult, evaluate_gates
from loadtests.record import DATASET, record_run, run_event
from loadtests.results import RouteStats, RunResult, last_good_result, write_result
from siem.model import EventQuery
from siem.sqlite import SqliteStore
from vigil.settings import Settings, from_mapping

GATES = (Gate("p95_ms", 500), Gate("error_ratio", 0.02), Gate("checkout_success_ratio", 0.5))


def route(
    name: str, *, p95: float = 100, failures: int = 0, requests: int = 100, method: str = "GET"
) -> RouteStats:
    return RouteStats(method, name, requests, failures, requests / 10, p95 / 2, p95)


def run(
    *,
    profile: str = "smoke",
    started_at: str = "2025-11-28T09:30:05+00:00",
    routes: tuple[RouteStats, ...] | None = None,
    total: RouteStats | None = None,
    checkouts: dict[str, int] | None = None,
    peak_users: int = 4,
    release: str | None = "v1",
) -> RunResult:
    routes = (route("/api/products"),) if routes is None else routes
    return RunResult(
        profile=profile,
        host="http://127.0.0.1:8001",
        release=release,
        started_at=started_at,
        duration_s=10.0,
        peak_users=peak_users,
        routes=routes,
        total=total or dataclasses.replace(routes[0], method="", name="Aggregated"),
        checkouts={"paid": 9, "declined": 1} if checkouts is None else checkouts,
    )


def save(data_dir: Path, result: RunResult, *, passed: bool = True) -> Path:
    verdicts = [GateResult("p95_ms", 500, result.total.p95_ms, passed)]
    return write_result(data_dir, result, verdicts)


def settings_for(tmp_path: Path, **store: str) -> Settings:
    return from_mapping({"data_dir": str(tmp_path / "data"), "store": store})


# ---- comparison -----------------------------------------------------------------


def test_compare_marks_p95_and_error_regressions() -> None:
    then = run(routes=(route("/api/products", p95=100), route("/api/checkout", method="POST")))
    now = run(
        routes=(
            route("/api/products", p95=130),
            route("/api/checkout", method="POST", failures=3),
        ),
        total=route("Aggregated", p95=130, failures=3, method=""),
    )
    comparison = compare_runs(then, now)
    assert comparison.regressions == (
        Regression("GET /api/products", "p95_ms", 100, 130),
        Regression("POST /api/checkout", "error_ratio", 0.0, 0.03),
        Regression("all routes", "p95_ms", 100, 130),
        Regression("all routes", "error_ratio", 0.0, 0.03),
    )
    table = comparison_table(comparison, "20251128T093005Z-smoke.json")
    products = next(line for line in table.splitlines() if line.startswith("GET /api/products"))
    assert "100 → 130" in products and "+30.0%" in products and "REGRESSED (p95)" in products
    checkout = next(line for line in table.splitlines() if line.startswith("POST /api/checkout"))
    assert "0.0% → 3.0%" in checkout and "REGRESSED (errors)" in checkout
    everything = next(line for line in table.splitlines() if line.startswith("all routes"))
    assert everything.endswith("REGRESSED (p95, errors)")
    assert table.splitlines()[0] == (
        "compared with the last passing run of smoke: 20251128T093005Z-smoke.json "
        "(release v1, 10 s, up to 4 users); then → now"
    )
    assert "REGRESSED: 4 figures (p95 up > 20%, error ratio up > 1 pp)" in table
    assert "all routes: error ratio 0.0% → 3.0% (+3.0 pp)" in table


def test_compare_routes_with_few_requests_are_shown_not_judged() -> None:
    """A p95 from a dozen requests is noise: tripled, it is shown but not flagged."""
    baseline = run(routes=(route("/api/rare", p95=20, requests=12), route("/api/busy", p95=50)))
    current = run(routes=(route("/api/rare", p95=60, requests=12), route("/api/busy", p95=70)))
    comparison = compare_runs(baseline, current)
    assert [(r.route, r.metric) for r in comparison.regressions] == [("GET /api/busy", "p95_ms")]
    table = comparison_table(comparison, "base.json")
    rare = next(line for line in table.splitlines() if "/api/rare" in line)
    assert "20 → 60" in rare and "not judged" in rare and "REGRESSED" not in rare


def test_compare_improvement_is_not_marked() -> None:
    then = run(routes=(route("/api/products", p95=200, failures=5),))
    now = run(routes=(route("/api/products", p95=90, failures=0),))
    comparison = compare_runs(then, now)
    assert comparison.regressions == ()
    table = comparison_table(comparison, "base.json")
    assert "REGRESSED" not in table
    assert "-55.0%" in table and "5.0% → 0.0%" in table
    assert table.splitlines()[-1] == "no regressions against base.json"


def test_compare_thresholds_are_strictly_more_than() -> None:
    then = run(routes=(route("/api/products", p95=100, failures=2),))
    exactly = run(routes=(route("/api/products", p95=120, failures=3),))
    assert compare_runs(then, exactly).regressions == ()
    beyond = run(routes=(route("/api/products", p95=121, failures=4),))
    assert [r.metric for r in compare_runs(then, beyond).regressions] == [
        "p95_ms",
        "error_ratio",
        "p95_ms",
        "error_ratio",
    ]


def test_compare_route_missing_in_either_run_is_shown_not_flagged() -> None:
    then = run(routes=(route("/api/products"), route("/api/orders/[id]")))
    now = run(
        routes=(route("/api/products"), route("/api/checkout", method="POST", p95=900)),
        total=route("Aggregated", method=""),
    )
    comparison = compare_runs(then, now)
    assert [row.label for row in comparison.rows] == [
        "GET /api/products",
        "POST /api/checkout",
        "GET /api/orders/[id]",
        "all routes",
    ]
    assert comparison.regressions == ()
    lines = comparison_table(comparison, "base.json").splitlines()
    new = next(line for line in lines if line.startswith("POST /api/checkout"))
    assert "- → 900" in new and "n/a" in new and new.endswith("new route")
    gone = next(line for line in lines if line.startswith("GET /api/orders/[id]"))
    assert "100 → -" in gone and gone.endswith("not requested now")


def test_compare_checkout_ratio_and_user_count_note() -> None:
    then = run(checkouts={"paid": 9, "declined": 1}, peak_users=4)
    now = run(checkouts={}, peak_users=10)
    table = comparison_table(compare_runs(then, now), "base.json")
    assert "checkout success ratio: 0.900 → n/a" in table
    assert "note: that run had up to 4 users, this one 10" in table
    same = comparison_table(compare_runs(then, run(checkouts={"paid": 8, "declined": 2})), "b")
    assert "checkout success ratio: 0.900 → 0.800 (-10.0 pp)" in same
    assert "note:" not in same


# ---- last_good_result -------------------------------------------------------------


def test_last_good_result_picks_newest_passing_run_of_the_same_profile(tmp_path: Path) -> None:
    old = save(tmp_path, run(started_at="2025-11-28T09:00:00+00:00"))
    good = save(tmp_path, run(started_at="2025-11-28T10:00:00+00:00"))
    save(tmp_path, run(started_at="2025-11-28T11:00:00+00:00"), passed=False)
    # Another profile whose name ends like this one's, newer: never a baseline for smoke.
    save(tmp_path, run(profile="big-smoke", started_at="2025-11-28T12:00:00+00:00"))
    current = save(tmp_path, run(started_at="2025-11-28T13:00:00+00:00"))
    later = save(tmp_path, run(started_at="2025-11-28T14:00:00+00:00"))

    found = last_good_result(tmp_path, "smoke", before=current)
    assert found is not None and found.path == good and found.passed
    assert found.result.started_at == "2025-11-28T10:00:00+00:00"
    # Without `before`, the newest passing run of all; never the run itself.
    newest = last_good_result(tmp_path, "smoke")
    assert newest is not None and newest.path == later
    first = last_good_result(tmp_path, "smoke", before=good)
    assert first is not None and first.path == old
    assert last_good_result(tmp_path, "smoke", before=old) is None
    assert last_good_result(tmp_path, "peak-sale") is None
    assert last_good_result(tmp_path / "nowhere", "smoke") is None


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[]",
        json.dumps({"result": {"profile": "smoke"}, "gates": []}),
        "\udcff",
    ],
    ids=["broken-json", "not-an-object", "missing-fields", "not-utf8"],
)
def test_last_good_result_skips_unreadable_file_with_warning(tmp_path: Path, content: str) -> None:
    good = save(tmp_path, run(started_at="2025-11-28T09:00:00+00:00"))
    bad = tmp_path / "loadtests" / "20251128T100000Z-smoke.json"
    bad.write_bytes(content.encode("utf-8", "surrogateescape"))
    warnings: list[str] = []
    found = last_good_result(tmp_path, "smoke", warn=warnings.append)
    assert found is not None and found.path == good
    (warning,) = warnings
    assert str(bad) in warning and warning.startswith("skipping load-test result")


def test_last_good_result_warns_on_stderr_by_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "loadtests" / "20251128T100000Z-smoke.json"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"result": 1}', encoding="utf-8")
    assert last_good_result(tmp_path, "smoke") is None
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"warning: skipping load-test result {bad}" in captured.err


def test_last_good_result_rejects_non_numeric_figures(tmp_path: Path) -> None:
    path = save(tmp_path, run())
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["result"]["total"]["p95_ms"] = "fast"
    path.write_text(json.dumps(doc), encoding="utf-8")
    warnings: list[str] = []
    assert last_good_result(tmp_path, "smoke", warn=warnings.append) is None
    assert "figures must be numbers" in warnings[0]


# ---- the loadtest.run event ---------------------------------------------------------


def test_run_event_is_stored_and_found_with_its_fields(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    then = run(started_at="2025-11-28T09:00:00+00:00")
    now = run(
        routes=(route("/api/products", p95=700),),
        checkouts={"paid": 3, "declined": 1},
    )
    verdicts = evaluate_gates(now, GATES)
    path = save(Path(settings.data_dir), now, passed=False)
    regressions = compare_runs(then, now).regressions
    event = run_event(
        now, verdicts, path, baseline="20251128T090000Z-smoke.json", regressions=regressions
    )
    assert record_run(settings, event)

    store = SqliteStore(settings.store_path)
    try:
        (found,) = store.search(EventQuery(dataset="loadtest.run"))
    finally:
        store.close()
    assert found.id == event.id and found.dataset == DATASET == "loadtest.run"
    get = found.get
    assert get("@timestamp") == "2025-11-28T09:30:15.000Z"
    assert found.timestamp == event.timestamp
    assert (get("event.kind"), get("event.action"), get("event.outcome")) == (
        "event",
        "loadtest",
        "failure",
    )
    assert get("event.start") == "2025-11-28T09:30:05.000Z"
    assert get("event.end") == "2025-11-28T09:30:15.000Z"
    assert get("event.duration") == 10_000_000_000
    assert get("labels.profile") == "smoke" and get("labels.release") == "v1"
    assert get("url.full") == "http://127.0.0.1:8001"
    assert get("loadtest.requests") == 100 and get("loadtest.failures") == 0
    assert get("loadtest.error_ratio") == 0.0 and get("loadtest.rps") == 10.0
    assert get("loadtest.p95_ms") == 700 and get("loadtest.peak_users") == 4
    assert get("loadtest.checkout_success_ratio") == 0.75
    assert get("loadtest.result_file") == str(path.resolve())
    assert get("loadtest.gates") == [
        {"name": "p95_ms", "passed": False, "actual": 700.0, "limit": 500.0},
        {"name": "error_ratio", "passed": True, "actual": 0.0, "limit": 0.02},
        {"name": "checkout_success_ratio", "passed": True, "actual": 0.75, "limit": 0.5},
    ]
    assert get("loadtest.baseline") == "20251128T090000Z-smoke.json"
    assert get("loadtest.regressed") is True
    assert get("loadtest.regressions")[0] == {
        "route": "GET /api/products",
        "metric": "p95_ms",
        "then": 100,
        "now": 700,
    }
    # The same run recorded again (same result file) is stored once.
    again = run_event(now, verdicts, path, baseline="20251128T090000Z-smoke.json")
    assert again.id == event.id
    assert record_run(settings, again)
    store = SqliteStore(settings.store_path)
    try:
        assert len(store.search(EventQuery(dataset="loadtest.run"))) == 1
        assert store.write(events=[event]).duplicate_events == 1
        kql = "event.outcome:failure and labels.profile:smoke and loadtest.regressed:true"
        assert [e.id for e in store.search(EventQuery(kql=kql))] == [event.id]
    finally:
        store.close()


def test_run_event_passing_run_without_baseline(tmp_path: Path) -> None:
    result = run(release=None)
    verdicts = evaluate_gates(result, GATES)
    event = run_event(result, verdicts, tmp_path / "loadtests" / "x-smoke.json")
    assert event.get("event.outcome") == "success"
    assert event.get("labels") == {"profile": "smoke"}
    assert event.get("loadtest.baseline") is None
    assert event.get("loadtest.regressions") == []
    other = run_event(result, verdicts, tmp_path / "loadtests" / "y-smoke.json")
    assert other.id != event.id


def test_record_run_warns_naming_the_store_when_it_cannot_be_written(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("", encoding="utf-8")
    settings = settings_for(tmp_path, path=str(blocker / "siem.db"))
    result = run()
    event = run_event(result, (), tmp_path / "data" / "loadtests" / "r-smoke.json")
    warnings: list[str] = []
    assert record_run(settings, event, warn=warnings.append) is False
    (warning,) = warnings
    assert f"in the sqlite store {blocker / 'siem.db'}:" in warning
    assert "could not record the run as a loadtest.run event" in warning
    assert "r-smoke.json still has it" in warning


# ---- vigil loadtest, with the locust child replaced ----------------------------------


@pytest.fixture
def fake_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[RunResult]:
    """Results ``cmd_loadtest`` gets from its (faked) child, one per call, in order."""
    queue: list[RunResult] = []
    monkeypatch.setattr(loadtests.cli, "shop_release", lambda host: "v1")
    monkeypatch.setattr(loadtests.cli, "run_in_child", lambda *a, **k: queue.pop(0))
    return queue


def loadtest_args(config: Path) -> argparse.Namespace:
    return argparse.Namespace(
        config=str(config), profile="smoke", duration=None, users=None, host="http://h:1"
    )


def write_config(tmp_path: Path, **store: Any) -> Path:
    config = tmp_path / "vigil.yaml"
    body = {"data_dir": str(tmp_path / "data"), "store": store}
    config.write_text(json.dumps(body), encoding="utf-8")  # JSON is YAML
    return config


def test_cmd_loadtest_records_and_compares_runs(
    tmp_path: Path, fake_runs: list[RunResult], capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    fake_runs += [
        run(started_at="2025-11-28T09:00:00+00:00"),
        run(
            started_at="2025-11-28T09:10:00+00:00",
            routes=(route("/api/products", p95=140),),
        ),
        run(
            started_at="2025-11-28T09:20:00+00:00",
            routes=(route("/api/products", p95=4000),),
        ),
    ]
    assert loadtests.cli.cmd_loadtest(loadtest_args(config)) == 0
    first = capsys.readouterr().out
    assert "no earlier passing run of smoke to compare with" in first

    # Regressed but within the gates: still exit 0, the comparison only informs.
    assert loadtests.cli.cmd_loadtest(loadtest_args(config)) == 0
    second = capsys.readouterr().out
    assert "compared with the last passing run of smoke: 20251128T090000Z-smoke.json" in second
    assert "REGRESSED (p95)" in second
    summary_at, compare_at = second.index("load test smoke"), second.index("compared with")
    assert summary_at < compare_at < second.index("PASS: smoke")

    # Fails its p95 gate: compared with the second run, exit 1.
    assert loadtests.cli.cmd_loadtest(loadtest_args(config)) == 1
    third = capsys.readouterr().out
    assert "compared with the last passing run of smoke: 20251128T091000Z-smoke.json" in third
    assert "FAIL: smoke" in third

    store = SqliteStore(tmp_path / "data" / "siem.db")
    try:
        events = store.search(EventQuery(dataset="loadtest.run"))
    finally:
        store.close()
    assert [(e.get("event.outcome"), e.get("loadtest.baseline")) for e in events] == [
        ("failure", "20251128T091000Z-smoke.json"),
        ("success", "20251128T090000Z-smoke.json"),
        ("success", None),
    ]


def test_cmd_loadtest_store_failure_warns_and_exits_by_the_gates(
    tmp_path: Path, fake_runs: list[RunResult], capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("", encoding="utf-8")
    config = write_config(tmp_path, path=str(blocker / "siem.db"))
    fake_runs += [run(), run(started_at="2025-11-28T09:40:00+00:00", checkouts={})]
    assert loadtests.cli.cmd_loadtest(loadtest_args(config)) == 0
    captured = capsys.readouterr()
    assert "PASS: smoke" in captured.out
    store_file = blocker / "siem.db"
    assert (
        f"warning: could not record the run as a loadtest.run event in the sqlite store "
        f"{store_file}:" in captured.err
    )
    (saved,) = (tmp_path / "data" / "loadtests").glob("*-smoke.json")
    assert json.loads(saved.read_text(encoding="utf-8"))["result"]["profile"] == "smoke"
    # No checkouts: the checkout gate fails → 1, whatever the store does.
    assert loadtests.cli.cmd_loadtest(loadtest_args(config)) == 1
    assert "warning: could not record" in capsys.readouterr().err
