"""The playbook loader, action registry and runner, with a fake clock and deployer."""

from __future__ import annotations

import argparse
import re
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from alerting.promql import Engine, InstantSample
from playbooks.actions import ACTIONS, WaitFor, build_action
from playbooks.cli import add_commands, parse_params
from playbooks.context import RunContext, StepEnv
from playbooks.loader import PLAYBOOK_DIR, bind_params, find_playbook, load_playbook, render
from playbooks.model import Param, Playbook, PlaybookError, Step, parse_duration
from playbooks.runner import run
from siem.memory import MemoryStore
from siem.model import Event, EventQuery, Sample, make_labels
from vigil.deploy import DeployError, DeployResult, DeployStep
from vigil.settings import from_mapping

T0 = 1_700_000_000.0


class FakeClock:
    """Time moves only when someone sleeps (or a fake action says so)."""

    def __init__(self, start: float = T0) -> None:
        self.t = start
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds


class FakeDeployer:
    """Instances on releases; a roll-out moves them one by one, ``per_instance`` s each."""

    def __init__(
        self,
        clock: FakeClock,
        releases: dict[str, str] | None = None,
        previous: str | None = "v1",
        per_instance: float = 1.0,
        fail_on: str | None = None,
    ) -> None:
        self.clock = clock
        self.releases = dict(releases or {"shop-1": "v2", "shop-2": "v2"})
        self.previous = previous
        self.per_instance = per_instance
        self.fail_on = fail_on
        self.rollouts: list[tuple[str, str, str]] = []

    def current_releases(self) -> dict[str, str]:
        return dict(self.releases)

    def previous_release(self) -> str | None:
        return self.previous

    def roll_out(
        self,
        release: str,
        *,
        actor: str,
        on_step: Callable[[Any], None] | None = None,
        action: str = "deploy",
    ) -> DeployResult:
        self.rollouts.append((release, actor, action))
        before = sorted(set(self.releases.values()))[0]
        steps: list[DeployStep] = []
        for name in sorted(self.releases):
            if name == self.fail_on:
                raise DeployError(f"{name} did not become ready on {release}")
            self.clock.t += self.per_instance
            step = DeployStep(name, self.releases[name], release, self.per_instance)
            self.releases[name] = release
            steps.append(step)
            if on_step is not None:
                on_step(step)
        return DeployResult(before, release, steps)


class ScriptedEngine:
    """Answers ``instant`` with the given results in turn (the last one repeats)."""

    def __init__(self, *results: Sequence[Any] | float) -> None:
        self.results = list(results)
        self.calls: list[float] = []

    def instant(self, expr: str, at: float) -> Sequence[Any] | float:
        self.calls.append(at)
        return self.results.pop(0) if len(self.results) > 1 else self.results[0]


def make_ctx(
    clock: FakeClock | None = None,
    deployer: FakeDeployer | None = None,
    engine: Any = None,
    store: Any = None,
) -> tuple[RunContext, list[str]]:
    clock = clock or FakeClock()
    lines: list[str] = []
    store = store if store is not None else MemoryStore()
    ctx = RunContext(
        settings=from_mapping({}),
        store=store,
        engine=engine if engine is not None else Engine(store),
        deployer=deployer or FakeDeployer(clock),
        actor="alice",
        clock=clock,
        out=lines.append,
    )
    return ctx, lines


def write_playbook(tmp_path: Path, text: str, name: str = "drill") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def playbook_events(store: MemoryStore) -> list[Event]:
    events = store.search(EventQuery(dataset="vigil.playbook", limit=1000))
    return sorted(events, key=lambda e: (e.get("labels.run_id"), e.get("event.sequence")))


# -- loader ---------------------------------------------------------------------------------


def test_loader_shipped_rollback_playbook_is_valid() -> None:
    playbook = find_playbook("rollback-shop")
    assert [s.action for s in playbook.steps] == ["rollback", "wait_for", "report"]
    assert playbook.runbook == "runbooks/shop-high-error-rate.md"
    assert bind_params(playbook, {}) == {"release": ""}


def test_loader_every_file_in_playbook_dir_loads() -> None:
    paths = sorted(PLAYBOOK_DIR.glob("*.yaml"))
    assert paths
    for path in paths:
        load_playbook(path)


@pytest.mark.parametrize(
    ("text", "line", "match"),
    [
        (
            """
            name: drill
            steps:
              - name: oops
                action: shell
            """,
            4,
            r"steps\[0\]\.action: unknown action 'shell'; known actions: rollback, deploy, "
            r"wait_for, http, log, report",
        ),
        ("name: drill\nsteps: [a, b\n", 3, "not valid YAML"),
        ("name: drill\ncolour: red\nsteps: []\n", 2, "colour: unknown key; known keys here"),
        ("name: other\nsteps: []\n", 1, "must match the file name 'drill'"),
        ("name: drill\nsteps: []\n", 2, "steps: expected a non-empty list"),
        (
            """
            name: drill
            steps:
              - name: a
                action: log
                with: {message: hi}
                retries: 3
            """,
            6,
            r"steps\[0\]\.retries: unknown key",
        ),
        (
            """
            name: drill
            steps:
              - {name: a, action: log, with: {message: hi}}
              - {name: a, action: log, with: {message: ho}}
            """,
            4,
            "'a' is used twice",
        ),
        (
            """
            name: drill
            steps:
              - name: wait
                action: wait_for
                with:
                  expr: up == 0
                  interval: fast
            """,
            7,
            r"steps\[0\]\.with\.interval: 'interval': expected a duration",
        ),
        (
            """
            name: drill
            steps:
              - name: wait
                action: wait_for
                with:
                  expr: sum(rate(x[1m]) >
            """,
            6,
            r"steps\[0\]\.with\.expr: not valid PromQL",
        ),
        (
            """
            name: drill
            steps:
              - name: go
                action: deploy
                with: {release: "{{ params.nope }}"}
            """,
            5,
            "unknown parameter 'nope'",
        ),
        (
            """
            name: drill
            steps:
              - name: go
                action: deploy
                with: {release: "{{ env.HOME }}"}
            """,
            5,
            r"unsupported template \{\{ env.HOME \}\}",
        ),
        (
            """
            name: drill
            steps:
              - name: go
                action: http
                with: {url: "ftp://example.org"}
            """,
            5,
            "must start with http",
        ),
        (
            """
            name: drill
            steps:
              - name: go
                action: log
                timeout: soon
            """,
            5,
            r"steps\[0\]\.timeout: expected a duration",
        ),
    ],
)
def test_loader_errors_name_file_and_line(tmp_path: Path, text: str, line: int, match: str) -> None:
    path = write_playbook(tmp_path, text)
    with pytest.raises(PlaybookError, match=match) as info:
        load_playbook(path)
    assert info.value.file == str(path)
    assert info.value.line == line
    assert re.match(rf"{re.escape(str(path))}:{line}(:\d+)?: ", str(info.value))


def test_loader_templated_with_is_checked_when_params_are_bound(tmp_path: Path) -> None:
    path = write_playbook(
        tmp_path,
        """
        name: drill
        params:
          wait: {default: 5s}
        steps:
          - name: wait
            action: wait_for
            with:
              expr: up == 0
              interval: "{{ params.wait }}"
        """,
    )
    playbook = load_playbook(path)
    ctx, _ = make_ctx(engine=ScriptedEngine([1]))
    with pytest.raises(PlaybookError, match=rf"{path}:9: steps\[0\]\.with\.interval"):
        run(playbook, ctx, params={"wait": "often"}, assume_yes=True)


def test_bind_params_defaults_overrides_and_errors() -> None:
    playbook = Playbook(
        "p",
        "",
        params=(
            Param("release", "v1"),
            Param("target"),
        ),
        steps=(),
    )
    assert bind_params(playbook, {"target": "shop-1"}) == {"release": "v1", "target": "shop-1"}
    assert bind_params(playbook, {"target": "x", "release": "v3"})["release"] == "v3"
    with pytest.raises(PlaybookError, match="'target' is required; pass --param target=VALUE"):
        bind_params(playbook, {})
    with pytest.raises(PlaybookError, match=r"unknown parameter 'colour' \(params: release"):
        bind_params(playbook, {"target": "x", "colour": "red"})


def test_render_fills_params_in_nested_values() -> None:
    value = {
        "url": "http://h/{{params.path}}",
        "body": {"r": "{{ params.r }}"},
        "n": [1, "{{ params.r }}"],
    }
    assert render(value, {"path": "x", "r": "v1"}) == {
        "url": "http://h/x",
        "body": {"r": "v1"},
        "n": [1, "v1"],
    }


def test_parse_duration_units() -> None:
    assert [parse_duration(v) for v in ("500ms", "5s", "2m", "1h", 7, "1.5m")] == [
        0.5,
        5.0,
        120.0,
        3600.0,
        7.0,
        90.0,
    ]
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration("2 weeks")


# -- registry -------------------------------------------------------------------------------


def test_registry_builds_every_action_and_has_no_shell() -> None:
    assert set(ACTIONS) == {"rollback", "deploy", "wait_for", "http", "log", "report"}
    examples = {
        "rollback": {},
        "deploy": {"release": "v1"},
        "wait_for": {"expr": "up == 0", "timeout": "1m"},
        "http": {"url": "http://127.0.0.1:1/healthz", "expect_status": [200, 204]},
        "log": {"message": "hello"},
        "report": {},
    }
    for name, args in examples.items():
        assert isinstance(build_action(name, args), ACTIONS[name])  # type: ignore[arg-type]
    with pytest.raises(KeyError):
        build_action("shell", {"cmd": "rm -rf /"})


# -- runner ---------------------------------------------------------------------------------


def test_run_dry_run_plans_each_step_and_changes_nothing() -> None:
    clock = FakeClock()
    deployer = FakeDeployer(clock)
    store = MemoryStore()
    ctx, lines = make_ctx(clock, deployer, ScriptedEngine([]), store)
    result = run(find_playbook("rollback-shop"), ctx, dry_run=True)
    assert result.exit_code == 0 and result.dry_run
    assert "would roll shop-1, shop-2 from v2 to v1, one instance at a time" in result.plans[0]
    assert "would wait up to 3m (every 5s)" in result.plans[1]
    assert "now: no result" in result.plans[1]
    assert deployer.rollouts == [] and deployer.releases == {"shop-1": "v2", "shop-2": "v2"}
    assert playbook_events(store) == []
    assert any("dry run" in line for line in lines)


def test_run_dry_run_without_previous_release_says_how_to_fix() -> None:
    clock = FakeClock()
    ctx, lines = make_ctx(clock, FakeDeployer(clock, previous=None), ScriptedEngine([]))
    result = run(find_playbook("rollback-shop"), ctx, dry_run=True)
    assert result.exit_code == 1
    assert "--param release=v1" in result.aborted
    assert lines[-1].startswith("aborted:")


def test_run_rollback_shop_rolls_back_and_writes_events() -> None:
    clock = FakeClock()
    deployer = FakeDeployer(clock, per_instance=4.0)
    store = MemoryStore()
    # The plan asks once, then the step polls twice before the ratio is fine.
    engine = ScriptedEngine([], [], [], [InstantSample((), 0.004)])
    ctx, lines = make_ctx(clock, deployer, engine, store)
    result = run(find_playbook("rollback-shop"), ctx, assume_yes=True)

    assert result.exit_code == 0, lines
    assert deployer.rollouts == [("v1", "alice", "rollback")]
    assert deployer.releases == {"shop-1": "v1", "shop-2": "v1"}
    assert [s.outcome for s in result.steps] == ["success"] * 3
    assert result.steps[0].message == "rolled shop-1, shop-2 from v2 to v1"
    assert "held after 10s" in result.steps[1].message
    assert "releases now: shop-1 (v1), shop-2 (v1)" in result.steps[2].message
    assert "    shop-1: v2 -> v1 (4s)" in lines

    events = playbook_events(store)
    actions = [(e.get("event.action"), e.get("labels.step")) for e in events]
    assert actions == [
        ("run-started", None),
        ("step-started", "rollback"),
        ("step-finished", "rollback"),
        ("step-started", "wait-for-recovery"),
        ("step-finished", "wait-for-recovery"),
        ("step-started", "report"),
        ("step-finished", "report"),
        ("run-finished", None),
    ]
    assert {e.get("labels.run_id") for e in events} == {result.run_id}
    assert {e.get("labels.playbook") for e in events} == {"rollback-shop"}
    assert {e.get("user.name") for e in events} == {"alice"}
    finished = [e for e in events if e.get("event.action") == "step-finished"]
    assert [e.get("event.outcome") for e in finished] == ["success"] * 3
    assert finished[0].get("event.duration") == 8_000_000_000
    assert events[-1].get("event.outcome") == "success"


def test_run_failing_step_stops_the_run_and_exits_1() -> None:
    clock = FakeClock()
    deployer = FakeDeployer(clock, fail_on="shop-2")
    store = MemoryStore()
    ctx, lines = make_ctx(clock, deployer, ScriptedEngine([1]), store)
    result = run(find_playbook("rollback-shop"), ctx, assume_yes=True)
    assert result.exit_code == 1
    assert [s.outcome for s in result.steps] == ["failure", "skipped", "skipped"]
    assert result.steps[0].message == "shop-2 did not become ready on v1"
    finished = [e for e in playbook_events(store) if e.get("event.action") == "step-finished"]
    assert len(finished) == 1
    assert finished[0].get("error.message") == "shop-2 did not become ready on v1"
    assert playbook_events(store)[-1].get("event.outcome") == "failure"
    assert lines[-1].startswith("playbook rollback-shop failed")


def test_run_continue_on_error_keeps_going(tmp_path: Path) -> None:
    path = write_playbook(
        tmp_path,
        """
        name: drill
        steps:
          - name: probe
            action: http
            with: {url: "http://127.0.0.1:1/healthz", timeout: 1s}
            continue_on_error: true
          - name: note
            action: log
            with: {message: carried on}
        """,
    )
    ctx, lines = make_ctx(engine=ScriptedEngine([]))
    result = run(load_playbook(path), ctx, assume_yes=True)
    assert result.exit_code == 0
    assert [s.outcome for s in result.steps] == ["failure", "success"]
    assert result.steps[0].continued
    assert any("continuing: continue_on_error" in line for line in lines)


def test_run_asks_for_confirmation_and_changes_nothing_when_declined() -> None:
    clock = FakeClock()
    deployer = FakeDeployer(clock)
    store = MemoryStore()
    ctx, _ = make_ctx(clock, deployer, ScriptedEngine([]), store)
    prompts: list[str] = []

    def decline(prompt: str) -> bool:
        prompts.append(prompt)
        return False

    result = run(find_playbook("rollback-shop"), ctx, confirm=decline)
    assert prompts == ["Run 3 step(s) of rollback-shop as alice?"]
    assert result.exit_code == 1 and result.aborted == "not confirmed"
    assert deployer.rollouts == [] and playbook_events(store) == []


def test_wait_for_times_out_on_the_fake_clock() -> None:
    clock = FakeClock()
    engine = ScriptedEngine([])
    ctx, _ = make_ctx(clock, engine=engine)
    playbook = Playbook(
        "p",
        "",
        (),
        (Step("wait", "wait_for", {"expr": "up == 0", "timeout": "1m", "interval": "15s"}),),
    )
    result = run(playbook, ctx, assume_yes=True)
    assert result.exit_code == 1
    assert result.steps[0].message == "`up == 0` did not hold within 1m (last: no result)"
    assert result.steps[0].seconds == 60.0
    assert clock.sleeps == [15.0, 15.0, 15.0, 15.0]
    assert len(engine.calls) == 1 + 5  # the plan, then polls at 0, 15, 30, 45 and 60 s


def test_step_timeout_stops_rollout_between_instances(tmp_path: Path) -> None:
    path = write_playbook(
        tmp_path,
        """
        name: drill
        steps:
          - name: back
            action: rollback
            with: {release: v1}
            timeout: 90s
        """,
    )
    clock = FakeClock()
    deployer = FakeDeployer(
        clock, releases={"shop-1": "v2", "shop-2": "v2", "shop-3": "v2"}, per_instance=60.0
    )
    ctx, _ = make_ctx(clock, deployer, ScriptedEngine([]))
    result = run(load_playbook(path), ctx, assume_yes=True)
    assert result.exit_code == 1
    assert result.steps[0].message == "step timed out after 1m30s"
    # shop-1 and shop-2 moved whole; shop-3 was never touched.
    assert deployer.releases == {"shop-1": "v1", "shop-2": "v1", "shop-3": "v2"}


def test_rollback_already_on_target_does_nothing() -> None:
    clock = FakeClock()
    deployer = FakeDeployer(clock, releases={"shop-1": "v1", "shop-2": "v1"})
    ctx, _ = make_ctx(clock, deployer, ScriptedEngine([1]))
    playbook = find_playbook("rollback-shop")
    result = run(playbook, ctx, params={"release": "v1"}, assume_yes=True)
    assert result.ok
    assert result.steps[0].message == "nothing to roll: shop-1, shop-2 already on v1"
    assert deployer.rollouts == []


def test_run_survives_a_failing_audit_store() -> None:
    class BrokenStore(MemoryStore):
        def write(self, events: Any = (), samples: Any = ()) -> Any:
            raise OSError("disk full")

    ctx, lines = make_ctx(engine=ScriptedEngine([1]), store=BrokenStore())
    result = run(find_playbook("rollback-shop"), ctx, assume_yes=True)
    assert result.ok
    assert result.audit_errors == 8
    assert "warning: could not record the run-started event in the store: disk full" in lines


# -- wait_for against stored samples --------------------------------------------------------


def _shop_traffic(store: MemoryStore, *, fixed_at: float) -> None:
    """10 req/s per instance, 10% of them 502 until ``fixed_at``; then the 5xx series end."""
    samples: list[Sample] = []
    for instance in ("shop-1", "shop-2"):
        ok = errors = 0.0
        for t in range(int(T0) - 300, int(T0) + 400, 5):
            ok += 45.0 if t < fixed_at else 50.0
            samples.append(
                Sample(
                    make_labels(
                        "shop_http_requests_total",
                        instance=instance,
                        route="/api/checkout",
                        status="200",
                    ),
                    float(t),
                    ok,
                )
            )
            if t < fixed_at:
                errors += 5.0
                samples.append(
                    Sample(
                        make_labels(
                            "shop_http_requests_total",
                            instance=instance,
                            route="/api/checkout",
                            status="502",
                        ),
                        float(t),
                        errors,
                    )
                )
    store.write(samples=samples)


def test_wait_for_shipped_expression_passes_once_the_error_ratio_falls() -> None:
    store = MemoryStore()
    _shop_traffic(store, fixed_at=T0 + 60)
    clock = FakeClock()
    ctx, _ = make_ctx(clock, store=store)
    wait_step = find_playbook("rollback-shop").steps[1]
    action = build_action("wait_for", wait_step.with_)
    assert isinstance(action, WaitFor)
    assert "now: no result" in action.plan(ctx)  # 10% errors: the condition does not hold

    message = action.execute(StepEnv(ctx, "rollback-shop", "r1", clock.now()))
    # The last 502 was counted at T0+55; from T0+110 the 1m window (T0+50, T0+110]
    # holds one 502 sample only, so rate() has no 5xx series and `or vector(0)` gives 0.
    assert clock.now() == T0 + 110
    assert message.startswith("`(sum(rate(")
    assert "held after 1m50s (value 0)" in message


def test_wait_for_on_stored_samples_times_out_while_errors_continue() -> None:
    store = MemoryStore()
    _shop_traffic(store, fixed_at=T0 + 10_000)
    clock = FakeClock()
    ctx, _ = make_ctx(clock, store=store)
    action = build_action(
        "wait_for",
        {
            "expr": 'sum(rate(shop_http_requests_total{status=~"5.."}[1m])) '
            "/ sum(rate(shop_http_requests_total[1m])) < 0.01",
            "timeout": "30s",
        },
    )
    with pytest.raises(PlaybookError, match="did not hold within 30s"):
        action.execute(StepEnv(ctx, "p", "r1", clock.now()))
    assert clock.now() == T0 + 30


# -- cli ------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vigil")
    parser.add_argument("--config")
    add_commands(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_refuses_to_run_without_tty_or_yes(capsys: pytest.CaptureFixture[str]) -> None:
    args = _parser().parse_args(["playbook", "run", "rollback-shop"])
    assert args.func(args) == 2
    assert "pass --yes to run it, or --dry-run" in capsys.readouterr().err


def test_cli_parse_params() -> None:
    assert parse_params(["release=v1", "note=a=b"]) == {"release": "v1", "note": "a=b"}
    with pytest.raises(PlaybookError, match="expected KEY=VALUE"):
        parse_params(["release"])


def test_cli_list_shows_shipped_playbooks(capsys: pytest.CaptureFixture[str]) -> None:
    args = _parser().parse_args(["playbook", "list"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "rollback-shop" in out and "runbook: runbooks/shop-high-error-rate.md" in out


def test_rollback_playbook_and_its_runbook_link_each_other() -> None:
    playbook = find_playbook("rollback-shop")
    runbook = PLAYBOOK_DIR.parent / playbook.runbook
    front_matter = runbook.read_text(encoding="utf-8").split("---")[1]
    assert "playbook: rollback-shop" in front_matter.splitlines()


def test_rollback_runbook_states_the_playbooks_recovery_threshold() -> None:
    """The runbook tells the on-call what "recovered" means; it must be what the playbook
    waits for (a shop-wide 1m ratio stricter than the alert's 5%), not another figure."""
    playbook = find_playbook("rollback-shop")
    (wait,) = [s for s in playbook.steps if s.action == "wait_for"]
    threshold = re.search(r"<\s*([0-9.]+)\s*$", wait.with_["expr"])
    assert threshold is not None
    percent = f"{float(threshold.group(1)) * 100:g}%"
    assert percent == "1%"
    runbook = (PLAYBOOK_DIR.parent / playbook.runbook).read_text(encoding="utf-8")
    said = re.search(r"waits until the ([^.]*?) is\s+below ([0-9.]+%)", runbook)
    assert said is not None, "the runbook says what the playbook waits for"
    assert said.group(2) == percent
    assert "[1m]" in wait.with_["expr"] and "last minute" in said.group(1)
