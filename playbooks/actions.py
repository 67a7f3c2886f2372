"""Playbook actions and their registry: ``action: <type>`` in YAML → class.

Each action is built from its step's ``with:`` mapping (``parse``), can say
what it would do without doing it (``plan``, for ``--dry-run`` and the
confirmation prompt) and does it (``execute``), returning a one-line summary.
There is deliberately no ``shell`` action: a playbook can only do what these
classes allow.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import promql_parser

from playbooks.context import RunContext, StepEnv
from playbooks.model import ActionError, PlaybookError, StepTimeout, format_duration, parse_duration
from vigil.errors import VigilError


class ArgError(PlaybookError):
    """A ``with:`` value is missing or wrong; ``key`` says which one."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(message)


class Args:
    """Typed access to a step's ``with:`` mapping; unknown keys are errors."""

    def __init__(self, values: Mapping[str, Any], known: Sequence[str]) -> None:
        for key in values:
            if key not in known:
                raise ArgError(key, f"unknown key {key!r}; known keys here: {', '.join(known)}")
        self.values = values

    def text(self, key: str, default: str | None = None) -> str:
        if key not in self.values or self.values[key] is None:
            if default is None:
                raise ArgError(key, f"{key!r} is required")
            return default
        value = self.values[key]
        if isinstance(value, (bool, dict, list)):
            raise ArgError(key, f"{key!r} must be a string, got {value!r}")
        return str(value)

    def duration(self, key: str, default: float) -> float:
        if key not in self.values:
            return default
        try:
            return parse_duration(self.values[key])
        except ValueError as exc:
            raise ArgError(key, f"{key!r}: {exc}") from None

    def mapping(self, key: str) -> dict[str, Any]:
        value = self.values.get(key, {})
        if not isinstance(value, Mapping):
            raise ArgError(key, f"{key!r} must be a mapping, got {value!r}")
        return dict(value)


class Action(Protocol):
    """One step's behaviour."""

    def plan(self, ctx: RunContext) -> str:
        """What ``execute`` would do, without changing anything."""
        ...

    def execute(self, env: StepEnv) -> str:
        """Do it; return a one-line summary or raise ``ActionError``."""
        ...


class ActionType(Protocol):
    """An action class: built from its ``with:`` arguments."""

    def parse(self, args: Mapping[str, Any]) -> Action: ...


def _releases_text(releases: Mapping[str, str]) -> str:
    return ", ".join(f"{name} ({release})" for name, release in sorted(releases.items()))


def _roll(env: StepEnv, release: str, verb: str, action: str) -> str:
    """Roll the shop onto ``release`` through the context's deployer."""
    ctx = env.ctx
    current = ctx.deployer.current_releases()
    moving = sorted(name for name, rel in current.items() if rel != release)
    if not moving:
        return (
            f"nothing to {verb}: {', '.join(sorted(current)) or 'no instance'} already on {release}"
        )

    def on_step(step: Any) -> None:
        ctx.out(
            f"    {step.instance}: {step.release_before} -> {step.release_after} "
            f"({format_duration(step.seconds)})"
        )
        # Checked between instances: an instance is never left half-restarted.
        env.check_deadline()

    result = ctx.deployer.roll_out(release, actor=ctx.actor, on_step=on_step, action=action)
    names = ", ".join(step.instance for step in result.steps) or "no instance"
    return f"{verb}ed {names} from {result.release_before} to {result.release_after}"


def _plan_roll(ctx: RunContext, release: str, verb: str) -> str:
    current = ctx.deployer.current_releases()
    moving = {name: rel for name, rel in current.items() if rel != release}
    if not moving:
        return (
            f"nothing to {verb}: {', '.join(sorted(current)) or 'no instance'} already on {release}"
        )
    before = set(moving.values())
    if len(before) == 1:
        return (
            f"would {verb} {', '.join(sorted(moving))} from {before.pop()} to {release}, "
            "one instance at a time"
        )
    return f"would {verb} {_releases_text(moving)} to {release}, one instance at a time"


@dataclass(frozen=True)
class Rollback:
    """Roll the shop back to ``with.release`` or, when empty, the release before the last deploy."""

    release: str = ""

    @classmethod
    def parse(cls, args: Mapping[str, Any]) -> Rollback:
        return cls(Args(args, ["release"]).text("release", ""))

    def target(self, ctx: RunContext) -> str:
        if self.release:
            return self.release
        previous = ctx.deployer.previous_release()
        if previous is None:
            raise ActionError(
                "no previous release is recorded (no vigil.deploy event in the store); "
                "name one with --param release=v1"
            )
        return previous

    def plan(self, ctx: RunContext) -> str:
        return _plan_roll(ctx, self.target(ctx), "roll")

    def execute(self, env: StepEnv) -> str:
        return _roll(env, self.target(env.ctx), "roll", "rollback")


@dataclass(frozen=True)
class Deploy:
    """Roll the shop forward onto ``with.release``, one instance at a time."""

    release: str

    @classmethod
    def parse(cls, args: Mapping[str, Any]) -> Deploy:
        release = Args(args, ["release"]).text("release")
        if not release:
            raise ArgError("release", "'release' must not be empty")
        return cls(release)

    def plan(self, ctx: RunContext) -> str:
        return _plan_roll(ctx, self.release, "deploy")

    def execute(self, env: StepEnv) -> str:
        return _roll(env, self.release, "deploy", "deploy")


def _truthy(result: Sequence[Any] | float) -> bool:
    """PromQL success: a non-empty vector, or a scalar that is neither 0 nor NaN."""
    if isinstance(result, (int, float)):
        return bool(result) and not math.isnan(result)
    return len(result) > 0


def _show(result: Sequence[Any] | float) -> str:
    if isinstance(result, (int, float)):
        return f"{result:g}"
    if not result:
        return "no result"
    values = ", ".join(f"{getattr(s, 'value', s):g}" for s in list(result)[:3])
    more = f" (+{len(result) - 3} more)" if len(result) > 3 else ""
    return f"value {values}{more}"


@dataclass(frozen=True)
class WaitFor:
    """Poll a PromQL expression until it returns a result (or a true scalar)."""

    expr: str
    timeout: float = 120.0
    interval: float = 5.0

    @classmethod
    def parse(cls, args: Mapping[str, Any]) -> WaitFor:
        a = Args(args, ["expr", "timeout", "interval"])
        expr = a.text("expr")
        try:
            promql_parser.parse(expr)
        except Exception as exc:  # promql_parser raises a bare ValueError/TypeError
            raise ArgError("expr", f"not valid PromQL: {exc}") from None
        interval = a.duration("interval", 5.0)
        if interval <= 0:
            raise ArgError("interval", "'interval' must be more than 0s")
        return cls(expr, a.duration("timeout", 120.0), interval)

    def plan(self, ctx: RunContext) -> str:
        try:
            now = _show(ctx.engine.instant(self.expr, ctx.clock.now()))
        except Exception as exc:
            now = f"error: {exc}"
        return (
            f"would wait up to {format_duration(self.timeout)} (every "
            f"{format_duration(self.interval)}) until `{self.expr}` holds; now: {now}"
        )

    def execute(self, env: StepEnv) -> str:
        clock = env.ctx.clock
        start = clock.now()
        deadline = start + self.timeout
        if env.deadline is not None:
            deadline = min(deadline, env.deadline)
        last = "no evaluation yet"
        while True:
            try:
                result = env.ctx.engine.instant(self.expr, clock.now())
            except VigilError as exc:
                # A query the engine rejects will not get better by waiting.
                raise ActionError(f"`{self.expr}`: {exc}") from None
            except Exception as exc:
                # The store may be busy for a moment; keep polling until the deadline.
                last = f"error: {exc}"
            else:
                if _truthy(result):
                    waited = format_duration(clock.now() - start)
                    return f"`{self.expr}` held after {waited} ({_show(result)})"
                last = _show(result)
            now = clock.now()
            if now >= deadline:
                raise StepTimeout(
                    f"`{self.expr}` did not hold within {format_duration(deadline - start)} "
                    f"(last: {last})"
                )
            clock.sleep(min(self.interval, deadline - now))


@dataclass(frozen=True)
class Http:
    """Send one HTTP request and expect a status (``expect_status``: one code or a list)."""

    url: str
    method: str = "GET"
    expect_status: tuple[int, ...] = (200,)
    body: Mapping[str, Any] | None = None
    headers: Mapping[str, str] | None = None
    timeout: float = 10.0

    @classmethod
    def parse(cls, args: Mapping[str, Any]) -> Http:
        a = Args(args, ["url", "method", "expect_status", "body", "headers", "timeout"])
        url = a.text("url")
        if not url.startswith(("http://", "https://")):
            raise ArgError("url", f"'url' must start with http:// or https://, got {url!r}")
        method = a.text("method", "GET").upper()
        if method not in {"GET", "POST", "PUT", "DELETE", "HEAD"}:
            raise ArgError("method", f"'method' must be GET, POST, PUT, DELETE or HEAD: {method}")
        raw = args.get("expect_status", 200)
        codes = raw if isinstance(raw, list) else [raw]
        try:
            expect = tuple(int(code) for code in codes)
        except (TypeError, ValueError, OverflowError):  # OverflowError: int(.inf)
            raise ArgError(
                "expect_status", f"'expect_status' must be status codes: {raw!r}"
            ) from None
        body = a.mapping("body") if "body" in args else None
        headers = {str(k): str(v) for k, v in a.mapping("headers").items()}
        return cls(url, method, expect, body, headers or None, a.duration("timeout", 10.0))

    def plan(self, ctx: RunContext) -> str:
        expected = " or ".join(str(code) for code in self.expect_status)
        return f"would {self.method} {self.url} and expect {expected}"

    def execute(self, env: StepEnv) -> str:
        remaining = env.remaining()
        timeout = self.timeout if remaining is None else max(0.1, min(self.timeout, remaining))
        data = json.dumps(self.body).encode() if self.body is not None else None
        headers = dict(self.headers or {})
        if data is not None:
            headers.setdefault("Content-Type", "application/json")
        request = urllib.request.Request(self.url, data=data, headers=headers, method=self.method)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status = int(response.status)
        except urllib.error.HTTPError as exc:
            status = exc.code
        except TimeoutError:
            raise StepTimeout(
                f"{self.method} {self.url}: no answer within {format_duration(timeout)}"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ActionError(f"{self.method} {self.url}: {reason}") from None
        if status not in self.expect_status:
            expected = " or ".join(str(code) for code in self.expect_status)
            raise ActionError(f"{self.method} {self.url} answered {status}, expected {expected}")
        return f"{self.method} {self.url} answered {status}"


@dataclass(frozen=True)
class Log:
    """Print a message into the run's progress and audit trail."""

    message: str

    @classmethod
    def parse(cls, args: Mapping[str, Any]) -> Log:
        return cls(Args(args, ["message"]).text("message"))

    def plan(self, ctx: RunContext) -> str:
        return f"would log: {self.message}"

    def execute(self, env: StepEnv) -> str:
        return self.message


@dataclass(frozen=True)
class Report:
    """Print a summary of the run so far and the shop's releases now."""

    title: str = ""

    @classmethod
    def parse(cls, args: Mapping[str, Any]) -> Report:
        return cls(Args(args, ["title"]).text("title", ""))

    def plan(self, ctx: RunContext) -> str:
        return "would report what the steps before it did and the shop's releases"

    def execute(self, env: StepEnv) -> str:
        out = env.ctx.out
        out(f"    {self.title or env.playbook} — run {env.run_id} by {env.ctx.actor}")
        if env.params:
            out("    params: " + ", ".join(f"{k}={v!r}" for k, v in sorted(env.params.items())))
        for result in env.history:
            out(
                f"    {result.outcome:<8} {result.step} ({result.action}, "
                f"{format_duration(result.seconds)}): {result.message}"
            )
        try:
            releases = _releases_text(env.ctx.deployer.current_releases())
        except Exception as exc:
            releases = f"unknown ({exc})"
        out(f"    releases now: {releases}")
        failed = sum(1 for r in env.history if not r.ok)
        return (
            f"{len(env.history)} step(s) before this one, {failed} failed; releases now: {releases}"
        )


ACTIONS: dict[str, ActionType] = {
    "rollback": Rollback,
    "deploy": Deploy,
    "wait_for": WaitFor,
    "http": Http,
    "log": Log,
    "report": Report,
}
"""The action registry: the ``action:`` key of a step → its class."""


def build_action(name: str, args: Mapping[str, Any]) -> Action:
    """The action ``name`` built from ``args``; ``KeyError`` for an unknown name."""
    factory: Callable[[Mapping[str, Any]], Action] = ACTIONS[name].parse
    return factory(args)
