"""Playbook values: the parsed YAML, step results and the errors of the runner."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from vigil.errors import LocatedError


class PlaybookError(LocatedError):
    """A playbook file or a run of it is wrong.

    File errors name the file and line and say how to fix it, e.g.
    ``playbooks/rollback-shop.yaml:9: steps[0].action: unknown action 'shell'; ...``.
    """


class ActionError(PlaybookError):
    """A step's action failed while planning or running."""


class StepTimeout(ActionError):
    """A step ran past its timeout."""


@dataclass(frozen=True)
class Param:
    """A playbook parameter; ``default`` None means it must be given with ``--param``."""

    name: str
    default: str | None = None
    description: str = ""


@dataclass(frozen=True)
class Step:
    """One step as written: ``{name, action, with, timeout?, continue_on_error?}``."""

    name: str
    action: str
    with_: Mapping[str, Any] = field(default_factory=dict)
    timeout: float | None = None
    continue_on_error: bool = False
    line: int = 0
    # Line of each key of ``with``, so errors found at run time still point at the file.
    with_lines: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Playbook:
    """A parsed playbook file."""

    name: str
    description: str
    params: tuple[Param, ...]
    steps: tuple[Step, ...]
    file: str = "<memory>"
    runbook: str = ""


Outcome = Literal["success", "failure", "skipped"]


@dataclass(frozen=True)
class StepResult:
    """What one step did: outcome, a one-line message and how long it took."""

    step: str
    action: str
    outcome: Outcome
    message: str
    seconds: float
    continued: bool = False

    @property
    def ok(self) -> bool:
        return self.outcome != "failure"


@dataclass(frozen=True)
class RunResult:
    """What a run did; ``exit_code`` is what ``vigil playbook run`` returns."""

    playbook: str
    run_id: str
    actor: str
    dry_run: bool
    steps: tuple[StepResult, ...]
    plans: tuple[str, ...] = ()
    aborted: str = ""
    audit_errors: int = 0

    @property
    def ok(self) -> bool:
        return not self.aborted and all(s.ok or s.continued for s in self.steps)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1


_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h)?\s*$", re.ASCII)
MAX_DURATION_S = 7 * 86400
"""The longest step timeout a playbook may ask for (a week; sleep() overflows far above)."""
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """Seconds from ``90``, ``"500ms"``, ``"5s"``, ``"2m"`` or ``"1h"``.

    >>> parse_duration("2m")
    120.0
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 30s, 2m or 1h, got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"a duration must not be negative, got {value!r}")
        seconds = float(value) if value < MAX_DURATION_S else math.inf
    else:
        match = _DURATION.match(str(value)) if isinstance(value, str) else None
        if match is None:
            raise ValueError(f"expected a duration like 30s, 2m or 1h, got {value!r}")
        seconds = float(match.group(1)) * _UNIT[match.group(2)]
    if not seconds <= MAX_DURATION_S:  # also NaN
        raise ValueError(f"a duration must be at most {MAX_DURATION_S / 86400:.0f} days")
    return seconds


def format_duration(seconds: float) -> str:
    """``1.5s``, ``2m``, ``2m30s``: the shortest readable form."""
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds % 1 else f"{seconds:.0f}s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest}s" if rest else f"{minutes}m"
