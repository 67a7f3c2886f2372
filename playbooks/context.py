"""What actions act through: the clock, the deployer, the PromQL engine and the store.

Everything an action touches comes from ``RunContext``, so tests inject a fake
clock or a fake roll-out and the actions under test stay the real ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from playbooks.model import StepResult, StepTimeout, format_duration
from siem.model import Store
from vigil.settings import Settings


class Clock(Protocol):
    """Wall-clock time in seconds since the epoch, and a way to wait."""

    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))


class RolloutStep(Protocol):
    """One instance moved onto a release (``vigil.deploy.DeployStep``)."""

    @property
    def instance(self) -> str: ...

    @property
    def release_before(self) -> str: ...

    @property
    def release_after(self) -> str: ...

    @property
    def seconds(self) -> float: ...


class Rollout(Protocol):
    """A finished roll-out (``vigil.deploy.DeployResult``)."""

    @property
    def release_before(self) -> str: ...

    @property
    def release_after(self) -> str: ...

    @property
    def steps(self) -> Sequence[RolloutStep]: ...


class Deployer(Protocol):
    """How the deploy and rollback actions see and change the shop's releases."""

    def current_releases(self) -> dict[str, str]:
        """Instance name → release it runs now."""
        ...

    def previous_release(self) -> str | None:
        """The release before the last recorded deploy, or None."""
        ...

    def roll_out(
        self,
        release: str,
        *,
        actor: str,
        on_step: Callable[[Any], None] | None = None,
        action: str = "deploy",
    ) -> Rollout:
        """Move the shop onto ``release`` one instance at a time (``action``: deploy|rollback)."""
        ...


class VigilDeployer:
    """``Deployer`` on ``vigil.deploy``: the supervisor's control API and the store."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store

    def current_releases(self) -> dict[str, str]:
        from vigil import deploy

        return deploy.current_releases(self.settings)

    def previous_release(self) -> str | None:
        from vigil import deploy

        return deploy.previous_release(self.store)

    def roll_out(
        self,
        release: str,
        *,
        actor: str,
        on_step: Callable[[Any], None] | None = None,
        action: str = "deploy",
    ) -> Rollout:
        from vigil import deploy

        rv: Rollout = deploy.roll_out(
            self.settings, release, actor=actor, store=self.store, on_step=on_step, action=action
        )
        return rv


class QueryEngine(Protocol):
    """PromQL at one instant (``alerting.promql.Engine``): a vector or a scalar."""

    def instant(self, expr: str, at: float) -> Sequence[Any] | float: ...


@dataclass(frozen=True)
class RunContext:
    """What a run acts with and on; ``out`` prints one progress line."""

    settings: Settings
    store: Store
    engine: QueryEngine
    deployer: Deployer
    actor: str
    clock: Clock = field(default_factory=SystemClock)
    out: Callable[[str], None] = print


@dataclass(frozen=True)
class StepEnv:
    """What one running step sees: the context, its deadline, the steps before it."""

    ctx: RunContext
    playbook: str
    run_id: str
    started: float
    deadline: float | None = None
    history: tuple[StepResult, ...] = ()
    params: Mapping[str, str] = field(default_factory=dict)

    def remaining(self) -> float | None:
        """Seconds left before the step's timeout, or None without a timeout."""
        if self.deadline is None:
            return None
        return self.deadline - self.ctx.clock.now()

    def check_deadline(self) -> None:
        """Raise ``StepTimeout`` once the step's timeout has passed."""
        if self.deadline is not None and self.ctx.clock.now() >= self.deadline:
            limit = format_duration(self.deadline - self.started)
            raise StepTimeout(f"step timed out after {limit}")


def default_context(settings: Settings, actor: str, *, store: Store | None = None) -> RunContext:
    """The production context: the SQLite store, the PromQL engine, ``vigil.deploy``."""
    from alerting.promql import Engine
    from siem.sqlite import SqliteStore

    store = store if store is not None else SqliteStore(settings.store_path)
    return RunContext(
        settings=settings,
        store=store,
        engine=Engine(store),
        deployer=VigilDeployer(settings, store),
        actor=actor,
    )
