"""Run a playbook step by step: plan, confirm, act, and audit every step.

Each step's start and end is written to the store as a ``vigil.playbook``
event (``event.action`` step-started / step-finished, ``event.outcome``,
``labels.playbook``, ``labels.step``, ``labels.run_id``, ``user.name``,
``event.duration`` in ns) and printed as a progress line. A failing step stops
the run unless it has ``continue_on_error: true``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from playbooks.actions import Action
from playbooks.context import RunContext, StepEnv
from playbooks.loader import bind_params, prepare
from playbooks.model import (
    Outcome,
    Playbook,
    RunResult,
    Step,
    StepResult,
    StepTimeout,
    format_duration,
)
from siem.model import Event, event_id
from vigil.auth import audit_event
from vigil.errors import VigilError

DATASET = "vigil.playbook"


def _never(_prompt: str) -> bool:
    return False


class _Audit:
    """Writes the run's events; a store failure is reported, never fatal mid-run."""

    def __init__(self, playbook: Playbook, ctx: RunContext, run_id: str) -> None:
        self.playbook = playbook
        self.ctx = ctx
        self.run_id = run_id
        self.seq = 0
        self.errors = 0

    def write(
        self,
        action: str,
        outcome: str,
        message: str,
        *,
        step: Step | None = None,
        seconds: float | None = None,
        error: str = "",
    ) -> None:
        now = self.ctx.clock.now()
        self.seq += 1
        eid = event_id(f"playbook:{self.run_id}", self.seq)
        labels = {"playbook": self.playbook.name, "run_id": self.run_id}
        if step is not None:
            labels.update(step=step.name, action=step.action)
        event: dict[str, Any] = {
            "id": eid,
            "dataset": DATASET,
            "kind": "event",
            "category": ["process"],
            "type": ["start"] if action.endswith("started") else ["end"],
            "action": action,
            "outcome": outcome,
            # Per ECS, event.sequence orders events that share a timestamp.
            "sequence": self.seq,
        }
        if seconds is not None:
            event["duration"] = int(seconds * 1e9)
        doc: dict[str, Any] = {
            "@timestamp": dt.datetime.fromtimestamp(now, dt.UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "event": event,
            "message": message,
            "user": {"name": self.ctx.actor},
            "service": {"name": "vigil-playbook"},
            "labels": labels,
        }
        if error:
            doc["error"] = {"message": error}
        events = [Event(eid, now, DATASET, doc)]
        if action == "run-finished":
            # The run as an operator action in the audit trail, next to its step events.
            events.append(
                audit_event(
                    "playbook-run",
                    actor=self.ctx.actor,
                    outcome=outcome,
                    category="configuration",
                    message=f"{self.ctx.actor} ran playbook {self.playbook.name}: {outcome}",
                    labels=labels,
                    at=now,
                )
            )
        try:
            self.ctx.store.write(events=events)
        except Exception as exc:
            self.errors += 1
            self.ctx.out(f"warning: could not record the {action} event in the store: {exc}")


def run(
    playbook: Playbook,
    ctx: RunContext,
    *,
    params: Mapping[str, str] | None = None,
    dry_run: bool = False,
    assume_yes: bool = False,
    confirm: Callable[[str], bool] = _never,
) -> RunResult:
    """Run ``playbook``; with ``dry_run`` only print what each step would do.

    Unless ``assume_yes``, ``confirm(prompt)`` must return True before anything
    changes. Bad parameters or ``with:`` values raise ``PlaybookError`` before
    any step runs.
    """
    bound = bind_params(playbook, params or {})
    actions = prepare(playbook, bound)
    run_id = uuid.uuid4().hex[:12]
    out = ctx.out
    mode = " (dry run: nothing will change)" if dry_run else ""
    out(f"playbook {playbook.name} · run {run_id} · by {ctx.actor}{mode}")
    if playbook.runbook:
        out(f"runbook: {playbook.runbook}")

    plans, plan_error = _plan(playbook, actions, ctx)

    def finish(
        steps: tuple[StepResult, ...], aborted: str = "", audit_errors: int = 0
    ) -> RunResult:
        return RunResult(
            playbook.name, run_id, ctx.actor, dry_run, steps, plans, aborted, audit_errors
        )

    if plan_error:
        out(f"aborted: {plan_error}; nothing was changed")
        return finish((), plan_error)
    if dry_run:
        return finish(())
    if not assume_yes and not confirm(
        f"Run {len(actions)} step(s) of {playbook.name} as {ctx.actor}?"
    ):
        out("aborted: not confirmed; nothing was changed")
        return finish((), "not confirmed")

    audit = _Audit(playbook, ctx, run_id)
    audit.write("run-started", "unknown", f"{ctx.actor} started playbook {playbook.name}")
    started = ctx.clock.now()
    results: list[StepResult] = []
    stopped = False
    total = len(actions)
    for index, (step, action) in enumerate(zip(playbook.steps, actions, strict=True), 1):
        if stopped:
            results.append(StepResult(step.name, step.action, "skipped", "not run", 0.0))
            out(f"[{index}/{total}] {step.name}: skipped")
            continue
        begun = ctx.clock.now()
        deadline = begun + step.timeout if step.timeout is not None else None
        env = StepEnv(ctx, playbook.name, run_id, begun, deadline, tuple(results), bound)
        result = _run_step(step, action, env, audit, f"[{index}/{total}]")
        results.append(result)
        if not result.ok and not step.continue_on_error:
            stopped = True
    ok = all(r.ok or r.continued for r in results)
    summary = (
        f"playbook {playbook.name} {'succeeded' if ok else 'failed'} in "
        f"{format_duration(ctx.clock.now() - started)}"
    )
    audit.write(
        "run-finished", "success" if ok else "failure", summary, seconds=ctx.clock.now() - started
    )
    out(summary)
    rv = finish(tuple(results), "", audit.errors)
    return rv


def _plan(
    playbook: Playbook, actions: list[Action], ctx: RunContext
) -> tuple[tuple[str, ...], str]:
    """Each step's plan line, printed; and the first planning error, if any."""
    lines: list[str] = []
    error = ""
    for index, (step, action) in enumerate(zip(playbook.steps, actions, strict=True), 1):
        try:
            text = action.plan(ctx)
        except Exception as exc:
            text = f"cannot plan: {_describe(exc)}"
            error = error or f"step {step.name!r} cannot run: {_describe(exc)}"
        line = f"  {index}. {step.name} ({step.action}): {text}"
        lines.append(line)
        ctx.out(line)
    return tuple(lines), error


def _describe(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, VigilError) else f"{type(exc).__name__}: {exc}"


def _run_step(step: Step, action: Action, env: StepEnv, audit: _Audit, tag: str) -> StepResult:
    ctx = env.ctx
    ctx.out(f"{tag} {step.name} ({step.action}) ...")
    audit.write("step-started", "unknown", f"step {step.name} started", step=step)
    outcome: Outcome = "success"
    error = ""
    try:
        message = action.execute(env)
        # Actions check the deadline where they can; one that could not be
        # interrupted still fails when it overran.
        if env.deadline is not None and ctx.clock.now() > env.deadline:
            limit = format_duration(env.deadline - env.started)
            raise StepTimeout(f"step took longer than its timeout of {limit} ({message})")
    except KeyboardInterrupt:
        seconds = ctx.clock.now() - env.started
        audit.write(
            "step-finished",
            "failure",
            f"step {step.name} interrupted",
            step=step,
            seconds=seconds,
            error="interrupted (Ctrl-C)",
        )
        raise
    except Exception as exc:
        outcome, error = "failure", _describe(exc)
        message = error
    seconds = ctx.clock.now() - env.started
    continued = outcome == "failure" and step.continue_on_error
    audit.write(
        "step-finished",
        outcome,
        f"step {step.name}: {message}",
        step=step,
        seconds=seconds,
        error=error,
    )
    status = "ok" if outcome == "success" else "FAILED"
    suffix = " (continuing: continue_on_error)" if continued else ""
    ctx.out(f"{tag} {step.name}: {status} in {format_duration(seconds)} — {message}{suffix}")
    return StepResult(step.name, step.action, outcome, message, seconds, continued)
