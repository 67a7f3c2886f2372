"""Reading YAML files that come from outside: bounded, UTF-8 checked, every failure located.

Rule files, playbooks and the config file all go through here, so any bytes
end as a YAML node tree or a ``YamlInputError`` naming ``file:line[:col]`` and
what to fix — never ``UnicodeDecodeError``, ``RecursionError``, a bare yaml
exception or a process eaten by a "billion laughs" alias bomb. Example::

    text = read_text("config/rules/shop.yaml")
    root = compose(text, "config/rules/shop.yaml")   # yaml.Node or None
    value = construct(root, "config/rules/shop.yaml")  # when root is not None

The limits are far above what a hand-written file needs.
"""

from __future__ import annotations

import os
from typing import Any

import yaml

from vigil.errors import VigilError

MAX_FILE_BYTES = 256 * 1024
"""Bigger files are refused before they are read: a shipped rule file is 3 KiB, and pure-Python
YAML reads only about 100 KiB/s on a busy machine, so this bounds a reload to seconds."""
MAX_DEPTH = 32
"""Deeper nesting of lists and mappings is refused while composing."""
MAX_NODES = 200_000
"""Nodes after expanding aliases; bounds alias bombs (``&a [*b, *b, ...]``)."""


class YamlInputError(VigilError):
    """A YAML file cannot be used; names the file, line (and column) and the fix."""

    def __init__(
        self, message: str, *, file: str, line: int | None = None, column: int | None = None
    ) -> None:
        self.file = file
        self.line = line
        self.column = column
        self.reason = message
        where = file
        if line is not None:
            where += f":{line}" + (f":{column}" if column is not None else "")
        super().__init__(f"{where}: {message}")


def read_text(path: str | os.PathLike[str], *, max_bytes: int = MAX_FILE_BYTES) -> str:
    """The text of a UTF-8 file of at most ``max_bytes``; raises ``YamlInputError``."""
    file = str(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise YamlInputError(f"cannot read the file: {exc.strerror or exc}", file=file) from None
    except ValueError as exc:  # e.g. a NUL byte in the path
        raise YamlInputError(f"cannot open the file: {exc}", file=file) from None
    if len(data) > max_bytes:
        raise YamlInputError(
            f"the file is larger than {max_bytes // 1024} KiB; split it into smaller files",
            file=file,
        )
    return decode(data, file)


def decode(data: bytes, file: str) -> str:
    """``data`` as UTF-8; a bad byte raises ``YamlInputError`` at its line and column."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise YamlInputError(
            f"byte 0x{data[exc.start]:02x} is not UTF-8 text; save the file as UTF-8",
            file=file,
            line=line,
            column=column,
        ) from None


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader with a nesting limit: its composer recurses per level, and
    its scanner's work per token grows with the open ``[``/``{`` levels and indents
    (a megabyte of ``[`` would take hours)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def _too_deep(self, what: str) -> yaml.MarkedYAMLError:
        return yaml.MarkedYAMLError(
            problem=f"more than {MAX_DEPTH} {what} open at once; flatten the structure",
            problem_mark=self.get_mark(),
        )

    def fetch_flow_collection_start(self, TokenClass: type[yaml.Token]) -> None:
        super().fetch_flow_collection_start(TokenClass)
        if self.flow_level > MAX_DEPTH:
            raise self._too_deep("'[' or '{'")

    def add_indent(self, column: int) -> bool:
        added: bool = super().add_indent(column)
        if len(self.indents) > MAX_DEPTH:
            raise self._too_deep("indented blocks")
        return added

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise yaml.MarkedYAMLError(
                    problem=f"nested more than {MAX_DEPTH} levels deep; flatten the structure",
                    problem_mark=mark,
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _located(exc: yaml.YAMLError, text: str, file: str) -> YamlInputError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or str(exc)
    if mark is not None:
        return YamlInputError(
            f"not valid YAML: {problem}", file=file, line=mark.line + 1, column=mark.column + 1
        )
    position = getattr(exc, "position", None)  # ReaderError: a character YAML forbids
    if isinstance(position, int):
        line = text.count("\n", 0, position) + 1
        column = position - (text.rfind("\n", 0, position) + 1) + 1
        return YamlInputError(f"not valid YAML: {problem}", file=file, line=line, column=column)
    return YamlInputError(f"not valid YAML: {problem}", file=file)


def compose(text: str, file: str) -> yaml.Node | None:
    """The node tree of one YAML document (None when empty), checked against the limits."""
    loader: _BoundedLoader | None = None
    try:
        loader = _BoundedLoader(text)
        root = loader.get_single_node()
    except yaml.YAMLError as exc:
        raise _located(exc, text, file) from None
    except RecursionError:  # not expected below MAX_DEPTH; still never escape unlocated
        raise YamlInputError("nested too deeply", file=file) from None
    finally:
        if loader is not None:
            loader.dispose()
    if root is not None:
        _check_graph(root, file)
    return root


def error_at(node: yaml.Node, file: str, message: str) -> YamlInputError:
    """A ``YamlInputError`` at ``node``'s line and column."""
    mark = node.start_mark
    return YamlInputError(message, file=file, line=mark.line + 1, column=mark.column + 1)


def _check_graph(root: yaml.Node, file: str) -> None:
    """Refuse recursive aliases, non-scalar keys, and trees that alias expansion makes
    deeper than ``MAX_DEPTH`` or larger than ``MAX_NODES``."""
    # id(node) -> (values below and including it, levels below and including it)
    seen: dict[int, tuple[int, int]] = {}
    on_path: set[int] = set()

    def too_deep(node: yaml.Node) -> YamlInputError:
        return error_at(
            node,
            file,
            f"nested more than {MAX_DEPTH} levels deep once aliases are expanded; "
            "flatten the structure",
        )

    def visit(node: yaml.Node, depth: int) -> tuple[int, int]:
        key = id(node)
        if key in on_path:
            raise error_at(
                node, file, "an alias refers to a mapping or list that contains it; remove the loop"
            )
        if key in seen:
            if depth + seen[key][1] > MAX_DEPTH:
                raise too_deep(node)
            return seen[key]
        if depth > MAX_DEPTH:
            raise too_deep(node)
        total, height = 1, 1
        if isinstance(node, (yaml.SequenceNode, yaml.MappingNode)):
            on_path.add(key)
            children: list[yaml.Node] = []
            if isinstance(node, yaml.MappingNode):
                for key_node, value_node in node.value:
                    if not isinstance(key_node, yaml.ScalarNode):
                        raise error_at(
                            key_node, file, "a key must be a plain value, not a list or mapping"
                        )
                    children += (key_node, value_node)
            else:
                children = list(node.value)
            for child in children:
                child_total, child_height = visit(child, depth + 1)
                total += child_total
                height = max(height, child_height + 1)
                if total > MAX_NODES:
                    raise error_at(
                        node,
                        file,
                        f"more than {MAX_NODES} values once aliases are expanded; "
                        "use fewer or smaller aliases",
                    )
            on_path.discard(key)
        seen[key] = (total, height)
        return total, height

    visit(root, 1)


def construct(node: yaml.Node, file: str) -> Any:
    """The Python value of a node checked by ``compose``; bad tags or values are located.

    ``!!int 'x'``, ``!!foo 1``, ``2026-13-45`` (a date YAML reads as one) or an
    integer of 5000 digits raise ``YamlInputError`` at that value, not a bare exception.
    """
    try:
        return yaml.SafeLoader("").construct_object(node, deep=True)
    except Exception as exc:  # int(), date() and friends on hostile text: any error is the file's
        culprit = _bad_scalar(node) or node
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or exc
        if isinstance(exc, yaml.YAMLError) and mark is not None:
            raise YamlInputError(
                f"bad value: {problem}", file=file, line=mark.line + 1, column=mark.column + 1
            ) from None
        raise error_at(
            culprit, file, f"bad value {_preview(culprit)}: {problem}; quote it to make it a string"
        ) from None


def _bad_scalar(node: yaml.Node) -> yaml.ScalarNode | None:
    """The first scalar below ``node`` that cannot be constructed on its own."""
    todo = [node]
    seen: set[int] = set()
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, yaml.ScalarNode):
            try:
                yaml.SafeLoader("").construct_object(current)
            except Exception:  # the culprit, whatever it raised
                return current
        elif isinstance(current, yaml.MappingNode):
            todo.extend(n for pair in reversed(current.value) for n in reversed(pair))
        elif isinstance(current, yaml.SequenceNode):
            todo.extend(reversed(current.value))
    return None


def _preview(node: yaml.Node) -> str:
    if isinstance(node, yaml.ScalarNode):
        text = str(node.value)
        return repr(text if len(text) <= 40 else text[:40] + "…")
    return "here"
