"""Load-test profiles: ``loadtests/profiles/<name>.yaml``.

A profile says how many shoppers, how fast they arrive, for how long, in which
shape, and which gates the run must meet::

    description: a flash sale opening
    users: 60
    spawn_rate: 20
    duration: 2m
    shape: peak_sale          # or constant
    gates: {p95_ms: 800, error_ratio: 0.02, checkout_success_ratio: 0.9}

Unknown keys, unknown gates and wrong types are errors naming the file and line.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from loadtests.errors import LoadTestError, ProfileError
from loadtests.gates import GATES, Gate
from loadtests.shapes import SHAPES, Shape

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"

_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?$")


@dataclass(frozen=True)
class Profile:
    """A validated profile; ``source`` is the file it came from."""

    name: str
    users: int
    spawn_rate: float
    duration_s: float
    shape: str
    gates: tuple[Gate, ...]
    description: str = ""
    source: str = ""

    def build_shape(self) -> Shape:
        """The load shape of this profile."""
        return SHAPES[self.shape](self.users, self.spawn_rate, self.duration_s)

    def with_overrides(self, *, duration_s: float | None, users: int | None) -> Profile:
        """This profile with the command line's ``--duration`` and ``--users`` applied."""
        changes: dict[str, Any] = {}
        if duration_s is not None:
            changes["duration_s"] = duration_s
        if users is not None:
            changes["users"] = users
        return dataclasses.replace(self, **changes)


def parse_duration(text: str | int | float) -> float:
    """Seconds in ``"90s"``, ``"2m"``, ``"1m30s"``, ``"1h"`` or a plain number of seconds.

    Raises ValueError naming the accepted forms.
    """
    if isinstance(text, bool):
        raise ValueError("expected a duration such as 30s, 2m or 1m30s")
    if isinstance(text, (int, float)) or re.fullmatch(r"\d+(?:\.\d+)?", text.strip()):
        seconds = float(text)
    else:
        match = _DURATION.match(text.strip())
        if not text.strip() or match is None:
            raise ValueError(f"expected a duration such as 30s, 2m or 1m30s, got {text!r}")
        hours, minutes, secs = match.groups()
        seconds = int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(secs or 0)
    if seconds <= 0:
        raise ValueError("the duration must be positive")
    return seconds


def available_profiles() -> list[str]:
    """Names of the shipped profiles."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def profile_file(ref: str) -> Path:
    """The file of a profile given by name (``smoke``) or by path (``my/profile.yaml``)."""
    if ref.endswith((".yaml", ".yml")) or "/" in ref:
        path = Path(ref)
    else:
        path = PROFILE_DIR / f"{ref}.yaml"
    if not path.is_file():
        known = ", ".join(available_profiles())
        raise LoadTestError(
            f"no load-test profile {ref!r} ({path}); use one of: {known}, or a path to a .yaml file"
        )
    return path


def load_profile(ref: str) -> Profile:
    """Read and validate a profile by name or path."""
    path = profile_file(ref)
    return parse_profile(path.read_text(encoding="utf-8"), file=str(path), name=path.stem)


_KEYS = ("description", "users", "spawn_rate", "duration", "shape", "gates")
_REQUIRED = ("users", "spawn_rate", "duration")


def parse_profile(text: str, *, file: str, name: str) -> Profile:
    """Validate profile YAML ``text``; errors carry ``file`` and the line."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ProfileError(
            f"not valid YAML: {getattr(exc, 'problem', exc)}",
            file=file,
            line=mark.line + 1 if mark is not None else None,
        ) from None
    if not isinstance(root, yaml.MappingNode):
        raise ProfileError(
            "a profile is a mapping with keys " + ", ".join(_KEYS),
            file=file,
            line=root.start_mark.line + 1 if root is not None else None,
        )
    nodes = _mapping(root, file, "")
    for key, (key_line, _) in nodes.items():
        if key not in _KEYS:
            raise ProfileError(
                f"{key}: unknown key; known keys are: {', '.join(_KEYS)}", file=file, line=key_line
            )
    for key in _REQUIRED:
        if key not in nodes:
            raise ProfileError(f"{key}: missing; a profile needs {', '.join(_REQUIRED)}", file=file)

    def scalar(key: str) -> tuple[Any, int]:
        line, node = nodes[key]
        if not isinstance(node, yaml.ScalarNode):
            raise ProfileError(f"{key}: expected a single value", file=file, line=line)
        return yaml.SafeLoader("").construct_object(node), line

    users, line = scalar("users")
    if isinstance(users, bool) or not isinstance(users, int) or users < 1:
        raise ProfileError(
            f"users: expected a whole number >= 1, got {users!r}", file=file, line=line
        )
    spawn_rate, line = scalar("spawn_rate")
    if not _is_number(spawn_rate) or spawn_rate <= 0:
        raise ProfileError(
            f"spawn_rate: expected users per second > 0, got {spawn_rate!r}", file=file, line=line
        )
    duration, line = scalar("duration")
    try:
        duration_s = parse_duration(duration)
    except (ValueError, AttributeError) as exc:
        raise ProfileError(f"duration: {exc}", file=file, line=line) from None
    shape = "constant"
    if "shape" in nodes:
        shape, line = scalar("shape")
        if shape not in SHAPES:
            raise ProfileError(
                f"shape: unknown shape {shape!r}; use one of: {', '.join(SHAPES)}",
                file=file,
                line=line,
            )
    description = ""
    if "description" in nodes:
        description, line = scalar("description")
        if not isinstance(description, str):
            raise ProfileError("description: expected text", file=file, line=line)
    gates: tuple[Gate, ...] = ()
    if "gates" in nodes:
        gates = _gates(nodes["gates"], file)
    return Profile(
        name=name,
        users=users,
        spawn_rate=float(spawn_rate),
        duration_s=duration_s,
        shape=shape,
        gates=gates,
        description=description,
        source=file,
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _mapping(node: yaml.MappingNode, file: str, prefix: str) -> dict[str, tuple[int, yaml.Node]]:
    """Key → (line of the key, value node); duplicate keys are errors."""
    rv: dict[str, tuple[int, yaml.Node]] = {}
    for key_node, value_node in node.value:
        key = str(key_node.value)
        line = key_node.start_mark.line + 1
        if key in rv:
            raise ProfileError(f"{prefix}{key}: given twice; keep one", file=file, line=line)
        rv[key] = (line, value_node)
    return rv


def _gates(located: tuple[int, yaml.Node], file: str) -> tuple[Gate, ...]:
    line, node = located
    if not isinstance(node, yaml.MappingNode):
        raise ProfileError(
            "gates: expected a mapping of gate name to limit, e.g. {p95_ms: 800}",
            file=file,
            line=line,
        )
    gates = []
    for name, (key_line, value_node) in _mapping(node, file, "gates.").items():
        spec = GATES.get(name)
        if spec is None:
            raise ProfileError(
                f"gates.{name}: unknown gate; known gates are: {', '.join(sorted(GATES))}",
                file=file,
                line=key_line,
            )
        value: Any = None
        if isinstance(value_node, yaml.ScalarNode):
            value = yaml.SafeLoader("").construct_object(value_node)
        if not _is_number(value) or value < 0 or (spec.is_ratio and value > 1):
            expected = "a ratio between 0 and 1" if spec.is_ratio else "a number >= 0"
            raise ProfileError(
                f"gates.{name}: expected {expected} ({spec.description}), got {value!r}",
                file=file,
                line=key_line,
            )
        gates.append(Gate(name, float(value)))
    return tuple(gates)
