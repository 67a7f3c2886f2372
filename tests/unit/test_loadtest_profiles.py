"""Load-test profiles, shapes, gates, results and shopper identities — all without locust."""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path

import pytest

from loadtests.errors import LoadTestError, ProfileError
from loadtests.gates import Gate, evaluate_gates, gate_table
from loadtests.profiles import available_profiles, load_profile, parse_duration, parse_profile
from loadtests.results import (
    RouteStats,
    RunResult,
    checkout_outcome,
    result_path,
    summary_table,
    write_result,
)
from loadtests.shapes import ConstantShape, PeakSaleShape
from loadtests.shoppers import client_ip, luhn_check_digit, new_identity
from shop.payments import luhn_ok, parse_card

GOOD = """\
description: test
users: 10
spawn_rate: 5
duration: 1m30s
shape: peak_sale
gates:
  p95_ms: 800
  error_ratio: 0.02
  checkout_success_ratio: 0.9
"""


def parse(text: str) -> object:
    return parse_profile(text, file="p.yaml", name="p")


def run_result(
    *, p95: float = 100, failures: int = 0, checkouts: dict[str, int] | None = None
) -> RunResult:
    total = RouteStats("", "Aggregated", 100, failures, 10.0, 20, p95)
    route = RouteStats("GET", "/api/products", 100, failures, 10.0, 20, p95)
    return RunResult(
        profile="smoke",
        host="http://127.0.0.1:8001",
        release="v1",
        started_at="2025-11-28T09:30:05+00:00",
        duration_s=10.0,
        peak_users=4,
        routes=(route,),
        total=total,
        checkouts={"paid": 9, "declined": 1} if checkouts is None else checkouts,
    )


def test_profiles_shipped_ones_are_valid() -> None:
    assert {"smoke", "peak-sale", "black-friday"} <= set(available_profiles())
    for name in available_profiles():
        profile = load_profile(name)
        assert profile.users >= 1 and profile.duration_s > 0
        assert {g.name for g in profile.gates} == {
            "p95_ms",
            "error_ratio",
            "checkout_success_ratio",
        }
    assert load_profile("smoke").duration_s <= 20


def test_profiles_parse_good_profile() -> None:
    profile = parse_profile(GOOD, file="p.yaml", name="p")
    assert (profile.users, profile.spawn_rate, profile.duration_s) == (10, 5.0, 90.0)
    assert profile.shape == "peak_sale"
    assert profile.gates == (
        Gate("p95_ms", 800),
        Gate("error_ratio", 0.02),
        Gate("checkout_success_ratio", 0.9),
    )
    assert isinstance(profile.build_shape(), PeakSaleShape)


def test_profiles_overrides_replace_duration_and_users() -> None:
    profile = parse_profile(GOOD, file="p.yaml", name="p")
    changed = profile.with_overrides(duration_s=20, users=3)
    assert (changed.duration_s, changed.users, changed.spawn_rate) == (20, 3, 5.0)
    assert profile.with_overrides(duration_s=None, users=None) == profile


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (GOOD + "colour: red\n", r"p\.yaml:10: colour: unknown key"),
        (GOOD.replace("p95_ms", "p99_ms"), r"p\.yaml:7: gates\.p99_ms: unknown gate; known gates"),
        (GOOD.replace("users: 10", "users: ten"), r"p\.yaml:2: users: expected a whole number"),
        (GOOD.replace("users: 10", "users: 0"), r"p\.yaml:2: users"),
        (GOOD.replace("spawn_rate: 5", "spawn_rate: -1"), r"p\.yaml:3: spawn_rate"),
        (GOOD.replace("1m30s", "soon"), r"p\.yaml:4: duration: expected a duration"),
        (GOOD.replace("peak_sale", "zigzag"), r"p\.yaml:5: shape: unknown shape 'zigzag'"),
        (GOOD.replace("0.02", "2"), r"p\.yaml:8: gates\.error_ratio: expected a ratio"),
        (GOOD.replace("800", "fast"), r"p\.yaml:7: gates\.p95_ms: expected a number"),
        (GOOD.replace("users: 10\n", ""), r"p\.yaml: users: missing"),
        (GOOD + "users: 11\n", r"p\.yaml:10: users: given twice"),
        ("users: [1, 2\n", r"p\.yaml:2: not valid YAML"),
        ("- users\n", r"p\.yaml:1: a profile is a mapping"),
        (GOOD.replace("  p95_ms: 800\n", "  p95_ms: [800]\n"), r"gates\.p95_ms: expected"),
    ],
)
def test_profiles_bad_profile_names_file_and_line(text: str, match: str) -> None:
    with pytest.raises(ProfileError, match=match):
        parse(text)


def test_profiles_unknown_profile_lists_known_ones() -> None:
    with pytest.raises(LoadTestError, match=r"no load-test profile 'nope'.*smoke"):
        load_profile("nope")


def test_profiles_load_by_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("users: 2\nspawn_rate: 1\nduration: 5\n", encoding="utf-8")
    profile = load_profile(str(path))
    assert (profile.name, profile.shape, profile.gates, profile.source) == (
        "mine",
        "constant",
        (),
        str(path),
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("15s", 15), ("2m", 120), ("1m30s", 90), ("1h", 3600), ("0.5s", 0.5), ("20", 20), (45, 45)],
)
def test_parse_duration_forms(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "5x", "0s", "0", "-3", "1s2m"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_peak_sale_shape_ramps_spikes_holds_and_ramps_down() -> None:
    shape = PeakSaleShape(users=100, spawn_rate=20, duration_s=100)
    stages = shape.stages()
    assert [s.phase for s in stages] == ["ramp", "spike", "hold", "ramp_down"]
    assert [s.until_s for s in stages] == [25, 35, 85, 100]
    ramp, spike, hold, down = stages
    # The ramp reaches the 30 % baseline exactly at its end; the spike is faster.
    assert (ramp.users, ramp.spawn_rate) == (30, pytest.approx(30 / 25))
    assert (spike.users, spike.spawn_rate) == (100, 20)
    assert hold.users == 100
    assert down.users == 30
    assert shape.tick(0) == (30, pytest.approx(1.2))
    assert shape.tick(30) == (100, 20)
    assert shape.tick(50) == (100, 20)
    assert shape.tick(90) == (30, 20)
    assert shape.tick(100) is None


def test_peak_sale_shape_small_profile_keeps_one_user() -> None:
    stages = PeakSaleShape(users=2, spawn_rate=50, duration_s=10).stages()
    assert stages[0].users == 1
    assert stages[0].spawn_rate == pytest.approx(1 / 2.5)
    assert all(s.users >= 1 for s in stages)


def test_constant_shape_holds_users_until_the_end() -> None:
    shape = ConstantShape(users=4, spawn_rate=2, duration_s=15)
    assert shape.tick(0) == (4, 2)
    assert shape.tick(14.9) == (4, 2)
    assert shape.tick(15) is None


def test_gates_pass_when_within_limits() -> None:
    gates = (Gate("p95_ms", 800), Gate("error_ratio", 0.02), Gate("checkout_success_ratio", 0.9))
    verdicts = evaluate_gates(run_result(p95=800, failures=2), gates)
    assert [v.passed for v in verdicts] == [True, True, True]
    assert [v.measured for v in verdicts] == [800, 0.02, 0.9]


@pytest.mark.parametrize(
    ("gate", "result", "measured"),
    [
        (Gate("p95_ms", 800), run_result(p95=801), 801),
        (Gate("error_ratio", 0.02), run_result(failures=3), 0.03),
        (
            Gate("checkout_success_ratio", 0.9),
            run_result(checkouts={"paid": 8, "gateway_error": 2}),
            0.8,
        ),
    ],
)
def test_gates_fail_outside_limits(gate: Gate, result: RunResult, measured: float) -> None:
    (verdict,) = evaluate_gates(result, (gate,))
    assert verdict.passed is False
    assert verdict.measured == pytest.approx(measured)


def test_gates_unmeasurable_checkout_ratio_fails() -> None:
    (verdict,) = evaluate_gates(run_result(checkouts={}), (Gate("checkout_success_ratio", 0.5),))
    assert (verdict.measured, verdict.passed) == (None, False)
    assert "n/a" in gate_table([verdict])


def test_gate_table_shows_measured_limit_and_verdict() -> None:
    verdicts = evaluate_gates(
        run_result(p95=950), (Gate("p95_ms", 800), Gate("checkout_success_ratio", 0.9))
    )
    table = gate_table(verdicts).splitlines()
    assert table[0].split() == ["gate", "measured", "limit", "result"]
    assert table[2].split() == ["p95_ms", "950", "<=", "800", "FAIL"]
    assert table[3].split() == ["checkout_success_ratio", "0.900", ">=", "0.900", "PASS"]


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (201, "paid"),
        (402, "declined"),
        (409, "out_of_stock"),
        (502, "gateway_error"),
        (503, "gateway_error"),
        (0, "no_response"),
        (500, "http_500"),
    ],
)
def test_checkout_outcome_by_status(status: int, outcome: str) -> None:
    assert checkout_outcome(status) == outcome


def test_summary_table_has_routes_totals_and_checkouts() -> None:
    text = summary_table(run_result(failures=1))
    assert "GET /api/products" in text
    assert "all routes" in text
    assert "1 (1.0%)" in text
    assert "checkouts: 10 (declined 1, paid 9); success ratio 0.900" in text


def test_result_json_round_trips_and_is_written_under_data_dir(tmp_path: Path) -> None:
    result = run_result()
    assert RunResult.from_json(json.loads(json.dumps(result.to_json()))) == result
    verdicts = evaluate_gates(result, (Gate("p95_ms", 800),))
    path = write_result(tmp_path, result, verdicts)
    assert path == result_path(tmp_path, result)
    assert path == tmp_path / "loadtests" / "20251128T093005Z-smoke.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert doc["result"]["checkout_success_ratio"] == 0.9
    assert doc["gates"] == [{"name": "p95_ms", "limit": 800, "measured": 100, "passed": True}]


def test_shoppers_cards_pass_the_shops_checks_and_avoid_sandbox_endings() -> None:
    rng = random.Random(7)
    today = dt.date(2025, 11, 28)
    identities = [new_identity(rng, today) for _ in range(300)]
    for ident in identities:
        assert luhn_ok(ident.card_number)
        assert not ident.card_number.endswith(("0002", "0119"))
        parse_card(ident.card(), today=today)  # raises on an invalid number, expiry or CVC
    refs = {parse_card(i.card(), today=today).card_ref for i in identities}
    assert len(refs) == len(identities)
    assert len({i.client_ip for i in identities}) == len(identities)
    assert len({i.email for i in identities}) == len(identities)


def test_shoppers_luhn_check_digit_matches_known_number() -> None:
    assert luhn_check_digit("424242424242424") == "2"
    assert luhn_check_digit("400000000000000") == "2"


def test_shoppers_client_ips_are_distinct_valid_addresses() -> None:
    ips = [client_ip(n) for n in range(0, 200_000, 7)]
    assert len(set(ips)) == len(ips)
    for ip in ips:
        octets = [int(o) for o in ip.split(".")]
        assert octets[0] == 10 and all(0 <= o <= 255 for o in octets) and 1 <= octets[3] <= 254
