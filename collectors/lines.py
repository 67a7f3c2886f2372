"""A chunk read from a log file, as events: one per line, or one per multiline group.

The tailer (``collectors/tail.py``) reads at most ``max_bytes`` of a file at a
time and hands the chunk here with the :class:`~collectors.checkpoints.Position`
it was read at. Only whole lines are taken; the bytes taken tell the tailer
where the next read begins. A line a parser cannot read becomes an error event
with the raw line (counted in ``vigil_collector_parse_errors_total``), never a
dropped line.
"""

from __future__ import annotations

from collectors import multiline
from collectors.checkpoints import Position
from collectors.ecs import error_event
from collectors.errors import LineError
from collectors.metrics import CollectorMetrics
from collectors.parsers import Parser
from siem.model import Event


def parse_chunk(
    chunk: bytes,
    parse: Parser,
    *,
    source: str,
    pos: Position,
    max_bytes: int,
    final: bool,
    flush: bool,
    now: float,
    metrics: CollectorMetrics,
) -> tuple[list[Event], int]:
    """Events of the whole lines of ``chunk`` (read at ``pos``), and the bytes taken.

    ``final``: the last line is whole even without its newline; ``flush``: so
    is the last multiline group. A line longer than ``max_bytes`` (a full
    chunk without a newline) is taken as it is, as an error piece.
    """
    end = len(chunk) if final else chunk.rfind(b"\n") + 1
    if end == 0 and len(chunk) >= max_bytes:
        end = len(chunk)  # one line longer than max_bytes: store it as an error piece
    if isinstance(parse, multiline.Grouped):
        return multiline.parse_chunk(
            chunk[:end],
            parse,
            source=source,
            position=pos.line_position,
            offset=pos.offset,
            max_bytes=max_bytes,
            complete=final or flush,
            full=len(chunk) >= max_bytes,
            now=now,
            on_error=metrics.parse_errors.inc,
            on_cut=metrics.multiline_cuts.labels(file=source).inc,
        )
    events: list[Event] = []
    append = events.append
    generation = pos.generation
    offset = pos.offset
    # Per line only what must be: split in C, no method calls of our own.
    for piece in chunk[:end].split(b"\n"):
        at, offset = offset, offset + len(piece) + 1
        raw = piece.rstrip(b"\r")
        if not raw or raw.isspace():
            continue  # blank lines carry nothing
        line_pos = at if generation == 0 else f"{generation}:{at}"
        try:
            append(parse(raw, source=source, position=line_pos, offset=at, now=now))
        except LineError as exc:
            metrics.parse_errors.inc()
            append(error_event(raw, str(exc), source=source, position=line_pos, offset=at, now=now))
    return events, end
