"""A disk spool for batches that have no other copy (scrapes, syslog, the PostgreSQL poller).

A log file keeps its data until the tailer's checkpoint moves on; a scrape or
a datagram does not. When the store refuses writes for long, the sink moves
such batches here instead of holding them in memory, and replays them in the
order they came once the store is back.

On disk, one directory per lane (``<dir>/event``, ``<dir>/sample``) holds
append-only segment files ``NNNNNNNNNNNN.seg``. Each record is::

    magic b"VS1" | length (4 bytes, big-endian) | CRC-32 of the payload (4 bytes) | payload

and the payload is JSON: ``{"t": <time spooled>, "items": [...]}``. A record
cut short by a crash (torn tail) or whose checksum does not match is skipped
and counted in ``vigil_collector_spool_corrupt_records_total``, never a crash.
A file ``<lane>/position`` holds the segment and offset replayed so far; it is
written after each record is stored, so a crash replays at most one record
again, and the store dedupes it (deterministic event ids, samples keyed by
series and timestamp). A segment is deleted once replayed.

``max_bytes`` bounds the bytes on disk over all lanes; a batch that does not
fit is dropped, counted in ``vigil_collector_spool_dropped_items_total`` and
logged: the only place the collector drops data it collected.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import struct
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from collectors.metrics import CollectorMetrics
from siem.model import Event, Sample, value_from_text, value_text

log = logging.getLogger("vigil.collect.spool")

MAGIC = b"VS1"
_HEADER = struct.Struct(">3sII")
SEGMENT_BYTES = 8 << 20  # a new segment after this many bytes: replayed ones are deleted sooner
MAX_RECORD_BYTES = 256 << 20  # a length above this is corruption, not a record
_POSITION = "position"


def encode_item(item: Event | Sample) -> list[Any]:
    """``item`` as JSON: ``["e", id, ts, dataset, doc, text]`` or ``["s", labels, ts, value]``;
    a NaN value is text (``siem.model.value_text``), so the stale marker stays one."""
    if isinstance(item, Event):
        return ["e", item.id, item.timestamp, item.dataset, item.doc, item.text]
    value = value_text(item.value) if math.isnan(item.value) else item.value
    return ["s", [list(pair) for pair in item.labels], item.timestamp, value]


def decode_item(raw: Any) -> Event | Sample:
    """The item :func:`encode_item` wrote; ``ValueError`` when ``raw`` is not one."""
    if isinstance(raw, list) and len(raw) == 6 and raw[0] == "e":
        _, ident, ts, dataset, doc, text = raw
        if (
            isinstance(ident, str)
            and isinstance(ts, (int, float))
            and isinstance(dataset, str)
            and isinstance(doc, dict)
            and (text is None or isinstance(text, str))
        ):
            return Event(ident, float(ts), dataset, doc, text)
    if isinstance(raw, list) and len(raw) == 4 and raw[0] == "s":
        _, labels, ts, value = raw
        if (
            isinstance(labels, list)
            and all(
                isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p)
                for p in labels
            )
            and isinstance(ts, (int, float))
            and isinstance(value, (int, float, str))
        ):
            number = value_from_text(value) if isinstance(value, str) else float(value)
            return Sample(tuple((k, v) for k, v in labels), float(ts), number)
    raise ValueError("not a spooled event or sample")


def frame(payload: bytes) -> bytes:
    """One record: header (magic, length, CRC-32) and ``payload``."""
    return _HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


class SpoolRecord:
    """One spooled batch read back: its items, when it was spooled, and where it ends."""

    def __init__(self, items: list[Any], spooled_at: float, segment: int, end: int) -> None:
        self.items = items
        self.spooled_at = spooled_at
        self.segment = segment
        self.end = end


class LaneSpool:
    """The segments of one lane: append at the tail, read and pop at the head."""

    def __init__(
        self, path: Path, metrics: CollectorMetrics, *, segment_bytes: int = SEGMENT_BYTES
    ) -> None:
        self.path = path
        self._metrics = metrics
        self._segment_bytes = segment_bytes
        try:
            names = [p.stem for p in path.glob("*.seg")]
        except OSError as error:  # appends fail too, and are counted as drops
            log.error(
                "cannot read the spool", extra={"file.path": str(path), "error.message": str(error)}
            )
            names = []
        self._segments = sorted(int(n) for n in names if n.isdigit() and len(n) == 12)
        self._pos = self._read_position()
        self._head: SpoolRecord | None = None
        # Segment numbers are never reused, so a stale position cannot skip into a new file;
        # and a segment of an earlier run (maybe torn at its end) is never appended to.
        self._last = max([self._pos[0], *self._segments])
        self._appending = False

    def _seg_path(self, number: int) -> Path:
        return self.path / f"{number:012d}.seg"

    def _read_position(self) -> tuple[int, int]:
        try:
            segment, offset = (self.path / _POSITION).read_text("ascii").split()
            return int(segment), int(offset)
        except (OSError, ValueError, UnicodeError):
            return (self._segments[0] if self._segments else 0), 0

    def _write_position(self) -> None:
        """Save how far replay got; if that fails, a restart replays more (the store dedupes)."""
        tmp = self.path / (_POSITION + ".tmp")
        try:
            tmp.write_text(f"{self._pos[0]} {self._pos[1]}\n", "ascii")
            os.replace(tmp, self.path / _POSITION)
        except OSError as error:
            log.error(
                "cannot save the spool's replay position",
                extra={"file.path": str(tmp), "error.message": str(error)},
            )

    def bytes(self) -> int:
        """Bytes of the segments still on disk (popped records of the head included)."""
        total = 0
        for number in self._segments:
            with contextlib.suppress(OSError):
                total += self._seg_path(number).stat().st_size
        return total

    def empty(self) -> bool:
        return self.peek() is None

    def append(self, items: list[Any], now: float) -> int:
        """Append ``items`` as one record; returns the bytes written. ``OSError`` on failure."""
        payload = json.dumps(
            {"t": now, "items": [encode_item(i) for i in items]},
            ensure_ascii=True,
            separators=(",", ":"),
        ).encode("ascii")
        record = frame(payload)
        self.path.mkdir(parents=True, exist_ok=True)
        if (
            not self._appending
            or not self._segments
            or self._tail_size() + len(record) > self._segment_bytes
        ):
            self._last += 1
            self._segments.append(self._last)
            self._appending = True
        path = self._seg_path(self._segments[-1])
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            before = os.fstat(fd).st_size
            try:
                if os.write(fd, record) != len(record):
                    raise OSError(f"short write to {path} (disk full?)")
            except OSError:
                # Cut a partial record off, and append no more here: records after a
                # torn one could not be found again.
                self._appending = False
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, before)
                raise
        finally:
            os.close(fd)
        return len(record)

    def _tail_size(self) -> int:
        try:
            return self._seg_path(self._segments[-1]).stat().st_size
        except OSError:
            return 0

    def peek(self) -> SpoolRecord | None:
        """The oldest record not yet popped, or None when the lane is empty."""
        while self._head is None and self._segments:
            segment = self._segments[0]
            if self._pos[0] != segment:
                self._pos = (segment, 0)
            self._head = self._read_at(segment, self._pos[1])
            if self._head is None:
                self._drop_segment(segment)
        return self._head

    def peek_many(self, max_items: int) -> list[SpoolRecord]:
        """The oldest records not yet popped, in order: the head, then those after it in
        its segment while they hold at most ``max_items`` items in all (for one write).

        Only clean records are looked ahead at; the head's reading (:meth:`peek`)
        skips and counts a corrupt one when it gets there.
        """
        head = self.peek()
        if head is None:
            return []
        records, total = [head], len(head.items)
        while True:
            after = self._read_at(records[-1].segment, records[-1].end, quiet=True)
            if after is None or total + len(after.items) > max_items:
                return records
            records.append(after)
            total += len(after.items)

    def pop(self) -> None:
        """Forget the head record (it is stored); a segment replayed to its end is deleted."""
        head = self.peek()
        if head is None:
            return
        self._head = None
        self._pos = (head.segment, head.end)
        self._write_position()
        self.peek()  # deletes the segment when nothing follows the record in it

    def _drop_segment(self, segment: int) -> None:
        self._segments.remove(segment)
        # The position moves first: a crash between the two replays nothing twice.
        self._pos = ((self._segments[0] if self._segments else self._last + 1), 0)
        self._write_position()
        try:
            self._seg_path(segment).unlink(missing_ok=True)
        except OSError as error:
            log.error(
                "cannot delete a replayed spool segment",
                extra={"file.path": str(self._seg_path(segment)), "error.message": str(error)},
            )

    def _read_at(self, segment: int, offset: int, quiet: bool = False) -> SpoolRecord | None:
        """The first readable record at or after ``offset``; None at the segment's end.

        A record whose checksum or JSON is wrong is skipped (its length is still
        trusted when it fits the file); a header or payload cut short ends the
        segment. Each is counted. With ``quiet``, the first such record ends the
        read instead, uncounted.
        """
        try:
            with open(self._seg_path(segment), "rb") as f:
                f.seek(offset)
                while True:
                    header = f.read(_HEADER.size)
                    if not header:
                        return None
                    if quiet and len(header) < _HEADER.size:
                        return None
                    if len(header) < _HEADER.size:
                        self._corrupt(segment, offset, "torn record header")
                        return None
                    magic, length, crc = _HEADER.unpack(header)
                    if quiet and (magic != MAGIC or length > MAX_RECORD_BYTES):
                        return None
                    if magic != MAGIC or length > MAX_RECORD_BYTES:
                        self._corrupt(segment, offset, "bad record header")
                        return None
                    payload = f.read(length)
                    if quiet and len(payload) < length:
                        return None
                    if len(payload) < length:
                        self._corrupt(segment, offset, "torn record")
                        return None
                    end = offset + _HEADER.size + length
                    record = None
                    if zlib.crc32(payload) == crc:
                        record = _decode(payload, segment, end)
                    if record is not None or quiet:
                        return record
                    self._corrupt(segment, offset, "record checksum or content wrong")
                    offset = end
        except OSError as error:
            if quiet:
                return None
            log.error(
                "cannot read spool segment; skipping it",
                extra={"file.path": str(self._seg_path(segment)), "error.message": str(error)},
            )
            return None

    def _corrupt(self, segment: int, offset: int, why: str) -> None:
        self._metrics.spool_corrupt_records.inc()
        log.error(
            "spool %s at offset %d; skipped",
            why,
            offset,
            extra={"file.path": str(self._seg_path(segment))},
        )


def _decode(payload: bytes, segment: int, end: int) -> SpoolRecord | None:
    try:
        body = json.loads(payload)
        spooled_at = float(body["t"])
        items = [decode_item(raw) for raw in body["items"]]
    except (ValueError, TypeError, KeyError, RecursionError):
        return None
    return SpoolRecord(items, spooled_at, segment, end)


class Spool:
    """The spool of every lane under ``path``, bounded by ``max_bytes`` in all."""

    def __init__(
        self,
        path: Path,
        metrics: CollectorMetrics,
        *,
        max_bytes: int,
        segment_bytes: int = SEGMENT_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self._metrics = metrics
        self._max_bytes = max_bytes
        self._clock = clock
        self._lanes: dict[str, LaneSpool] = {}
        self._segment_bytes = segment_bytes
        for kind in ("event", "sample"):
            self.lane(kind)
        self._bytes = sum(lane.bytes() for lane in self._lanes.values())
        self._oldest = self._oldest_head()
        # Read from the /metrics thread: plain attributes only, no file access there.
        metrics.spool_bytes.set_function(lambda: self._bytes)
        metrics.spool_oldest.set_function(self.oldest_seconds)

    def lane(self, kind: str) -> LaneSpool:
        if kind not in self._lanes:
            self._lanes[kind] = LaneSpool(
                self.path / kind, self._metrics, segment_bytes=self._segment_bytes
            )
        return self._lanes[kind]

    def bytes(self) -> int:
        return self._bytes

    def _oldest_head(self) -> float | None:
        heads = [lane.peek() for lane in self._lanes.values()]
        times = [head.spooled_at for head in heads if head is not None]
        return min(times) if times else None

    def oldest_seconds(self) -> float:
        """Now minus when the oldest record still spooled was written (0 when empty)."""
        oldest = self._oldest
        return 0.0 if oldest is None else max(0.0, self._clock() - oldest)

    def append(self, kind: str, items: list[Any]) -> bool:
        """Spool ``items`` of lane ``kind``. False when they were dropped (full, or disk error)."""
        if not items:
            return True
        lane = self.lane(kind)
        if self._bytes >= self._max_bytes:
            return self._drop(kind, items, "spool full")
        try:
            now = self._clock()
            self._bytes += lane.append(items, now)
            if self._oldest is None:
                self._oldest = now
        except (OSError, ValueError, TypeError, RecursionError) as error:
            return self._drop(kind, items, f"cannot spool: {error}")
        return True

    def popped(self, kind: str) -> None:
        """The head record of ``kind`` is stored: forget it."""
        self.lane(kind).pop()
        self._bytes = sum(lane.bytes() for lane in self._lanes.values())
        self._oldest = self._oldest_head()

    def _drop(self, kind: str, items: list[Any], why: str) -> bool:
        self._metrics.spool_dropped_items.inc(len(items))
        log.error(
            "%s; dropped %d %ss",
            why,
            len(items),
            kind,
            extra={"labels.max_bytes": self._max_bytes, "file.path": str(self.path)},
        )
        return False
