"""Multiline events: consecutive lines a parser declares as one event.

A parser that writes events over several lines (PostgreSQL's statements and
their ``DETAIL:``/``HINT:`` lines, Python tracebacks) is wrapped in
:class:`Grouped` with a :class:`Rule`: ``continues(group, line)`` says whether
``line`` belongs to the group begun before it. The tailer hands the parser
the group's lines joined by ``\\n``, with the position of its first line, so
a group re-read after a restart keeps its event id.

A group is bounded (``max_lines``, ``max_bytes``): a line that would exceed
either begins a group of its own, so nothing is dropped. The group so cut
short carries the tag ``multiline_cut`` (ECS ``tags``) and each cut counts in
``vigil_collector_multiline_cut_total{file}``; the rest of the message goes on
as the events after it. The last group of
what was read may still grow; :func:`split` keeps it back unless told the
file is finished or quiet.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from collectors.ecs import error_event
from collectors.errors import LineError
from siem.model import Event

MAX_LINES = 500
MAX_BYTES = 64 * 1024
# The ECS tag of an event whose group a bound cut short.
CUT_TAG = "multiline_cut"


@dataclass(frozen=True)
class Rule:
    """How lines group: ``continues(lines_so_far, line)`` → ``line`` joins them."""

    continues: Callable[[Sequence[bytes], bytes], bool]
    max_lines: int = MAX_LINES
    max_bytes: int = MAX_BYTES


@dataclass(frozen=True)
class Grouped:
    """A parser whose events span lines grouped by ``rule``; called like the parser."""

    parse: Callable[..., Event]
    rule: Rule

    def __call__(
        self, raw: bytes, *, source: str, position: int | str, offset: int, now: float
    ) -> Event:
        return self.parse(raw, source=source, position=position, offset=offset, now=now)


@dataclass(frozen=True)
class Group:
    """Lines of one event, and the byte offset of its first line in the chunk.

    ``cut``: the line after it belonged to it, but a bound (``max_lines``,
    ``max_bytes``) made it begin a group of its own.
    """

    start: int
    lines: tuple[bytes, ...]
    cut: bool = False

    @property
    def raw(self) -> bytes:
        return b"\n".join(self.lines)


def split(
    lines: Sequence[tuple[int, bytes]], rule: Rule, *, max_bytes: int, complete: bool
) -> tuple[list[Group], int | None]:
    """Group ``lines`` (chunk offset, line without newline; blank lines left out).

    Returns the groups that are whole and the chunk offset where the kept-back
    last group begins (``None`` when ``complete``: nothing more will join it).
    ``max_bytes`` caps a group besides ``rule.max_bytes`` (a group must fit
    one read of the tailer).
    """
    limit = max(1, min(rule.max_bytes, max_bytes))
    groups: list[Group] = []
    start = -1
    current: list[bytes] = []
    size = 0
    for at, line in lines:
        if current:
            joins = rule.continues(current, line)
            if joins and len(current) < rule.max_lines and size + 1 + len(line) <= limit:
                current.append(line)
                size += 1 + len(line)
                continue
            groups.append(Group(start, tuple(current), cut=joins))
        start, current, size = at, [line], len(line)
    if not current:
        return groups, None
    if complete:
        groups.append(Group(start, tuple(current)))
        return groups, None
    return groups, start


def parse_chunk(
    chunk: bytes,
    parser: Grouped,
    *,
    source: str,
    position: Callable[[int], int | str],
    offset: int,
    max_bytes: int,
    complete: bool,
    full: bool,
    now: float,
    on_error: Callable[[], object],
    on_cut: Callable[[], object],
) -> tuple[list[Event], int]:
    """Events of the groups of whole lines in ``chunk`` (read at byte ``offset``); bytes taken.

    The last group waits for the line after it unless ``complete`` (the file
    is finished or quiet), or it is all a ``full`` read holds: bounded, it
    goes as it is. ``position`` makes a line's id position from its offset;
    a group's event has its first line's. A group the parser rejects becomes
    an error event with its raw lines (``on_error`` counts it). A group a
    bound cut short is tagged :data:`CUT_TAG` (``on_cut`` counts it).
    """
    lines: list[tuple[int, bytes]] = []
    at = 0
    for piece in chunk.split(b"\n"):
        raw = piece.rstrip(b"\r")
        if raw and not raw.isspace():
            lines.append((at, raw))
        at += len(piece) + 1
    groups, held = split(lines, parser.rule, max_bytes=max_bytes, complete=complete)
    end = len(chunk)
    if held is not None:
        if groups or not full:
            end = held
        else:
            groups, _ = split(lines, parser.rule, max_bytes=max_bytes, complete=True)
    events: list[Event] = []
    for group in groups:
        at = offset + group.start
        line_pos = position(at)
        raw = group.raw
        try:
            event = parser(raw, source=source, position=line_pos, offset=at, now=now)
        except LineError as exc:
            on_error()
            event = error_event(raw, str(exc), source=source, position=line_pos, offset=at, now=now)
        if group.cut:
            on_cut()
            event = tagged(event, CUT_TAG)
        events.append(event)
    return events, end


def tagged(event: Event, tag: str) -> Event:
    """``event`` with ``tag`` added to its ECS ``tags``."""
    tags = event.doc.get("tags")
    if isinstance(tags, str):
        tags = [tags]
    kept = [t for t in tags if t != tag] if isinstance(tags, list) else []
    # The log line's own text no longer says what the document does.
    return replace(event, doc={**event.doc, "tags": [*kept, tag]}, text=None)


def python_traceback(lines: Sequence[bytes], line: bytes) -> bool:
    """Does ``line`` go on the Python traceback in ``lines`` (or begin one after a log line)?

    A traceback is ``Traceback (most recent call last):``, indented frame
    lines, then the unindented exception line; chained exceptions add
    ``During handling of the above exception…`` / ``The above exception was
    the direct cause…`` and another traceback. The line logged before a
    traceback (gunicorn's ``Exception in worker process``, the shop's
    ``Exception on /checkout``) is the event's first line.
    """
    chained = bool(lines) and lines[-1].startswith(_CHAIN)
    if line.startswith(_TRACEBACK):
        return chained or not _in_traceback(lines)
    if not _in_traceback(lines):
        return False
    if line.startswith(_CHAIN):
        return _after_exception(lines)
    if chained:
        return False
    # Frame lines are indented; the exception line is the first unindented one after them.
    return not _after_exception(lines)


_TRACEBACK = b"Traceback (most recent call last):"
_CHAIN = (b"During handling of the above exception", b"The above exception")


def _in_traceback(lines: Sequence[bytes]) -> bool:
    return any(x.startswith(_TRACEBACK) for x in lines)


def _after_exception(lines: Sequence[bytes]) -> bool:
    """Is the group's last line an exception line (its traceback is finished)?"""
    last = lines[-1]
    return not (last[:1] in (b" ", b"\t") or last.startswith((_TRACEBACK, *_CHAIN)))
