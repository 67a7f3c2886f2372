"""Load shapes: how many shoppers are active at each moment of a run.

A shape is a list of stages; each stage holds a target user count and the rate
at which locust spawns or stops users to reach it, until its end time. The
runner turns a shape into a locust ``LoadTestShape`` (``runner.StagedLoadShape``),
so this module stays free of locust and gevent and is tested as plain code.

Example::

    shape = PeakSaleShape(users=100, spawn_rate=20, duration_s=60)
    shape.tick(30.0)  # (100, 20.0): the hold at peak
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Stage:
    """Until ``until_s`` seconds into the run, aim for ``users`` spawned at ``spawn_rate``/s."""

    phase: str
    until_s: float
    users: int
    spawn_rate: float


class Shape(Protocol):
    """A load shape: its stages, and the target at a moment of the run."""

    def stages(self) -> tuple[Stage, ...]: ...

    def tick(self, run_time_s: float) -> tuple[int, float] | None: ...


def tick_of(stages: tuple[Stage, ...], run_time_s: float) -> tuple[int, float] | None:
    """``(users, spawn_rate)`` of the stage running at ``run_time_s``; None once all ended."""
    for stage in stages:
        if run_time_s < stage.until_s:
            return stage.users, stage.spawn_rate
    return None


@dataclass(frozen=True)
class PeakSaleShape:
    """A sale opening: ramp to a baseline, spike to the peak, hold it, ramp down.

    The baseline is 30 % of ``users``. Phases take 25 %, 10 %, 50 % and 15 % of
    the duration; the ramp spawns just fast enough to reach the baseline at its
    end, the spike and the ramp down move at the profile's ``spawn_rate``.
    """

    users: int
    spawn_rate: float
    duration_s: float

    BASELINE_SHARE = 0.3
    RAMP_END = 0.25
    SPIKE_END = 0.35
    HOLD_END = 0.85

    def stages(self) -> tuple[Stage, ...]:
        d = self.duration_s
        baseline = max(1, math.ceil(self.users * self.BASELINE_SHARE))
        ramp_s = d * self.RAMP_END
        return (
            Stage("ramp", ramp_s, baseline, min(self.spawn_rate, baseline / ramp_s)),
            Stage("spike", d * self.SPIKE_END, self.users, self.spawn_rate),
            Stage("hold", d * self.HOLD_END, self.users, self.spawn_rate),
            Stage("ramp_down", d, baseline, self.spawn_rate),
        )

    def tick(self, run_time_s: float) -> tuple[int, float] | None:
        return tick_of(self.stages(), run_time_s)


@dataclass(frozen=True)
class ConstantShape:
    """``users`` shoppers (spawned at ``spawn_rate``/s) for the whole duration."""

    users: int
    spawn_rate: float
    duration_s: float

    def stages(self) -> tuple[Stage, ...]:
        return (Stage("constant", self.duration_s, self.users, self.spawn_rate),)

    def tick(self, run_time_s: float) -> tuple[int, float] | None:
        return tick_of(self.stages(), run_time_s)


# The profile's ``shape:`` key → a shape built from (users, spawn_rate, duration_s).
SHAPES: dict[str, Callable[[int, float, float], Shape]] = {
    "peak_sale": PeakSaleShape,
    "constant": ConstantShape,
}
