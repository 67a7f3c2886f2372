"""Read playbook YAML into ``Playbook`` values; every error names file and line.

A playbook file::

    name: rollback-shop             # must match the file name
    description: Roll the shop back
    runbook: runbooks/shop-high-error-rate.md
    params:
      release: {default: "", description: "empty means the release before the last deploy"}
    steps:
      - name: rollback
        action: rollback            # a key of playbooks.actions.ACTIONS
        with: {release: "{{ params.release }}"}
        timeout: 5m
        continue_on_error: false
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from playbooks.actions import ACTIONS, Action, ArgError, build_action
from playbooks.model import Param, Playbook, PlaybookError, Step, parse_duration
from vigil import safeyaml

PLAYBOOK_DIR = Path(__file__).resolve().parent
"""Where the shipped playbooks live (next to this package's code)."""

_TOP_KEYS = ("name", "description", "runbook", "params", "steps")
_STEP_KEYS = ("name", "action", "with", "timeout", "continue_on_error")
_PARAM_KEYS = ("default", "description")
_TEMPLATE = re.compile(r"\{\{(.*?)\}\}")
_PARAM_REF = re.compile(r"^\s*params\.([A-Za-z_][A-Za-z0-9_]*)\s*$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


class _Reader:
    """Walks the composed YAML of one file, raising errors located in it."""

    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, message: str, node: yaml.Node | int | None) -> PlaybookError:
        line = _line(node) if isinstance(node, yaml.Node) else node
        return PlaybookError(message, file=self.file, line=line)

    def mapping(self, node: yaml.Node, where: str, known: Sequence[str]) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(f"{where}: expected a mapping with keys {', '.join(known)}", node)
        rv: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key not in known:
                raise self.fail(
                    f"{where}{'.' if where else ''}{key}: unknown key; "
                    f"known keys here: {', '.join(known)}",
                    key_node,
                )
            rv[key] = value_node
        return rv

    def value(self, node: yaml.Node) -> Any:
        """The node's Python value; a value YAML cannot build is a located error."""
        try:
            return safeyaml.construct(node, self.file)
        except safeyaml.YamlInputError as exc:
            raise PlaybookError(
                exc.reason, file=self.file, line=exc.line, column=exc.column
            ) from None

    def text(self, node: yaml.Node | None, where: str, *, required: bool = False) -> str:
        if node is None:
            if required:
                raise self.fail(f"{where}: required; add it", None)
            return ""
        value = self.value(node)
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise self.fail(f"{where}: expected a string, got {value!r}", node)
        return str(value)


def load_playbook(path: str | Path) -> Playbook:
    """Parse and check one playbook file; raise ``PlaybookError`` with file:line."""
    file = str(path)
    reader = _Reader(file)
    try:
        node = safeyaml.compose(safeyaml.read_text(path), file)
    except safeyaml.YamlInputError as exc:
        raise PlaybookError(exc.reason, file=file, line=exc.line, column=exc.column) from None
    if node is None:
        raise reader.fail("empty file; a playbook needs name, description and steps", 1)
    top = reader.mapping(node, "", _TOP_KEYS)
    if "name" not in top:
        raise reader.fail("name: required; add the playbook's name (its file name)", node)
    name = reader.text(top["name"], "name")
    stem = Path(path).stem
    if name != stem:
        raise reader.fail(f"name: {name!r} must match the file name {stem!r}", top["name"])
    if not _NAME.match(name):
        raise reader.fail(f"name: {name!r} may hold only a-z, 0-9, '-' and '_'", top["name"])
    params = _params(reader, top.get("params"))
    if "steps" not in top:
        raise reader.fail("steps: required; add a list of steps", node)
    steps = _steps(reader, top["steps"], {p.name for p in params})
    playbook = Playbook(
        name=name,
        description=reader.text(top.get("description"), "description"),
        params=params,
        steps=steps,
        file=file,
        runbook=reader.text(top.get("runbook"), "runbook"),
    )
    # Steps without templates are fully checked now; the rest when params are known.
    for index, step in enumerate(playbook.steps):
        if not _has_template(step.with_):
            _build(playbook, index, step, dict(step.with_))
    return playbook


def _params(reader: _Reader, node: yaml.Node | None) -> tuple[Param, ...]:
    if node is None:
        return ()
    if not isinstance(node, yaml.MappingNode):
        raise reader.fail(
            "params: expected a mapping of parameter name to {default, description}", node
        )
    rv: list[Param] = []
    for key_node, value_node in node.value:
        name = str(key_node.value)
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
            raise reader.fail(
                f"params.{name}: a parameter name is a Python-style identifier", key_node
            )
        spec = reader.mapping(value_node, f"params.{name}", _PARAM_KEYS)
        default = (
            reader.text(spec["default"], f"params.{name}.default") if "default" in spec else None
        )
        rv.append(
            Param(name, default, reader.text(spec.get("description"), f"params.{name}.description"))
        )
    return tuple(rv)


def _steps(reader: _Reader, node: yaml.Node, params: set[str]) -> tuple[Step, ...]:
    if not isinstance(node, yaml.SequenceNode) or not node.value:
        raise reader.fail("steps: expected a non-empty list of steps", node)
    rv: list[Step] = []
    seen: set[str] = set()
    for index, step_node in enumerate(node.value):
        where = f"steps[{index}]"
        spec = reader.mapping(step_node, where, _STEP_KEYS)
        name = reader.text(spec.get("name"), f"{where}.name", required=False)
        if not name:
            raise reader.fail(f"{where}.name: required; give the step a short name", step_node)
        if name in seen:
            raise reader.fail(
                f"{where}.name: {name!r} is used twice; step names must differ", spec["name"]
            )
        seen.add(name)
        if "action" not in spec:
            raise reader.fail(f"{where}.action: required; one of {', '.join(ACTIONS)}", step_node)
        action = reader.text(spec["action"], f"{where}.action")
        if action not in ACTIONS:
            raise reader.fail(
                f"{where}.action: unknown action {action!r}; known actions: {', '.join(ACTIONS)}",
                spec["action"],
            )
        with_, with_lines = _with(reader, spec.get("with"), where, params)
        timeout = None
        if "timeout" in spec:
            try:
                timeout = parse_duration(reader.value(spec["timeout"]))
            except ValueError as exc:
                raise reader.fail(f"{where}.timeout: {exc}", spec["timeout"]) from None
        keep_going = (
            reader.value(spec["continue_on_error"]) if "continue_on_error" in spec else False
        )
        if not isinstance(keep_going, bool):
            raise reader.fail(
                f"{where}.continue_on_error: expected true or false", spec["continue_on_error"]
            )
        rv.append(Step(name, action, with_, timeout, keep_going, _line(step_node), with_lines))
    return tuple(rv)


def _with(
    reader: _Reader, node: yaml.Node | None, where: str, params: set[str]
) -> tuple[dict[str, Any], dict[str, int]]:
    if node is None:
        return {}, {}
    if not isinstance(node, yaml.MappingNode):
        raise reader.fail(f"{where}.with: expected a mapping of the action's arguments", node)
    values: dict[str, Any] = {}
    lines: dict[str, int] = {}
    for key_node, value_node in node.value:
        key = str(key_node.value)
        values[key] = reader.value(value_node)
        lines[key] = _line(value_node)
        for ref in _templates(values[key]):
            match = _PARAM_REF.match(ref)
            if match is None:
                raise reader.fail(
                    f"{where}.with.{key}: unsupported template {{{{{ref}}}}}; "
                    "only {{ params.NAME }} is allowed",
                    value_node,
                )
            if match.group(1) not in params:
                known = ", ".join(sorted(params)) or "none declared"
                raise reader.fail(
                    f"{where}.with.{key}: unknown parameter {match.group(1)!r} "
                    f"(params: {known}); declare it under params",
                    value_node,
                )
    return values, lines


def _templates(value: Any) -> list[str]:
    if isinstance(value, str):
        return _TEMPLATE.findall(value)
    if isinstance(value, Mapping):
        return [t for v in value.values() for t in _templates(v)]
    if isinstance(value, list):
        return [t for v in value for t in _templates(v)]
    return []


def _has_template(value: Any) -> bool:
    return bool(_templates(value))


def render(value: Any, params: Mapping[str, str]) -> Any:
    """``value`` with every ``{{ params.NAME }}`` replaced (strings, lists, mappings).

    >>> render({"release": "{{ params.release }}"}, {"release": "v1"})
    {'release': 'v1'}
    """
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            ref = _PARAM_REF.match(match.group(1))
            if ref is None or ref.group(1) not in params:
                raise PlaybookError(f"cannot fill in {match.group(0)}: no such parameter")
            return params[ref.group(1)]

        return _TEMPLATE.sub(substitute, value)
    if isinstance(value, Mapping):
        return {k: render(v, params) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, params) for v in value]
    return value


def bind_params(playbook: Playbook, given: Mapping[str, str]) -> dict[str, str]:
    """The run's parameters: defaults overlaid with ``given`` (``--param k=v``)."""
    known = {p.name: p for p in playbook.params}
    for name in given:
        if name not in known:
            names = ", ".join(known) or "none"
            raise PlaybookError(f"{playbook.name}: unknown parameter {name!r} (params: {names})")
    rv: dict[str, str] = {}
    for name, param in known.items():
        if name in given:
            rv[name] = given[name]
        elif param.default is not None:
            rv[name] = param.default
        else:
            raise PlaybookError(
                f"{playbook.name}: parameter {name!r} is required; pass --param {name}=VALUE"
            )
    return rv


def prepare(playbook: Playbook, params: Mapping[str, str]) -> list[Action]:
    """Every step's action, built from its rendered ``with:``; errors name file:line."""
    return [
        _build(playbook, index, step, render(dict(step.with_), params))
        for index, step in enumerate(playbook.steps)
    ]


def _build(playbook: Playbook, index: int, step: Step, args: dict[str, Any]) -> Action:
    try:
        return build_action(step.action, args)
    except ArgError as exc:
        line = step.with_lines.get(exc.key, step.line)
        raise PlaybookError(
            f"steps[{index}].with.{exc.key}: {exc.reason}", file=playbook.file, line=line
        ) from None


def playbook_paths(directory: Path = PLAYBOOK_DIR) -> list[Path]:
    """The playbook files of ``directory``, sorted by name."""
    return sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])


def find_playbook(name: str, directory: Path = PLAYBOOK_DIR) -> Playbook:
    """Load playbook ``name`` from ``directory``, or from ``name`` itself when it is a path."""
    as_path = Path(name)
    try:
        is_path = as_path.suffix in {".yaml", ".yml"} and as_path.exists()
    except OSError as exc:  # e.g. a name longer than the file system allows
        raise PlaybookError(f"cannot open: {exc.strerror}", file=name) from None
    if is_path:
        return load_playbook(as_path)
    for path in playbook_paths(directory):
        if path.stem == name:
            return load_playbook(path)
    known = ", ".join(p.stem for p in playbook_paths(directory)) or "none"
    raise PlaybookError(f"no playbook named {name!r} in {directory} (known: {known})")
