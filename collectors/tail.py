"""Tail ECS JSON log files through their rotations; offsets checkpointed once stored.

The tailer follows each file matched by its globs; what it keeps between
runs, and how event ids follow from it, is in ``collectors/checkpoints.py``;
how rotated generations are found and known again, ``collectors/generations.py``;
how a chunk read becomes events, ``collectors/lines.py`` (and
``collectors/multiline.py`` for events of several lines).

What is guaranteed, proved by ``tests/reliability/test_rotation.py`` with
real ``vigil collect`` processes killed with SIGKILL (0 lines lost, 0 stored
twice): ``test_rotation_kill_9_plain_file``, ``test_rotation_rename_while_killed``,
``test_rotation_copytruncate_while_killed``, ``test_rotation_gzip_generations_behind``,
``test_rotation_deleted_generation_counts_exactly_what_was_lost``:

- Every rotated generation is read in order, to its end, however far behind
  the tailer is and across restarts: rename rotation (``app.log.1``,
  ``app.log.2``…, ``app.log-<date>``), copytruncate (the live file's *head*,
  its first bytes kept in the checkpoint, no longer matches, so the rest is
  read from the copy) and gzip-compressed generations (``app.log.2.gz``).
  A rotation under way — numbered generations with a gap (being
  renumbered), a copy that begins like the live file (not truncated yet) —
  is waited for rather than risk skipping or re-reading a generation (for
  ``ROTATED_QUIET_S`` at most).
- A rotated file's last line without a newline is taken as whole once the
  file has been quiet for ``ROTATED_QUIET_S`` (a writer may still hold it).
- What cannot be read — a generation deleted before the tailer got to it,
  bytes copytruncate overwrote first — is counted in
  ``vigil_collector_lost_bytes_total{file}`` and logged as an error naming
  the file. Only bytes the tailer had seen can be counted: a generation
  written and deleted entirely while the collector was down leaves no trace.
- ``vigil_collector_lag_bytes{file}`` is what is on disk and not yet read.

Not covered: a collector started without checkpoints begins with the live
file (older generations are not read); lines a writer appends to a rotated
file after the tailer has moved past it (a writer that never reopens its log)
are not read; any file named like a generation (``app.log.bak``) is taken
for one.

A parser whose events span lines (:class:`collectors.multiline.Grouped`)
gets whole groups: the checkpoint never passes a group still open, and the
last group of a file waits for the line after it, or for the file to be quiet
for ``ROTATED_QUIET_S``.

Each :meth:`Tailer.collect` reads at most ``max_bytes`` per file (bounded
memory, every file gets its turn); :meth:`Tailer.behind` tells the loop to
call again at once.
"""

from __future__ import annotations

import functools
import glob
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

from collectors import lines
from collectors.checkpoints import DONE_KEPT, Checkpoints, Position
from collectors.ecs import parse_line
from collectors.generations import (
    GZIP_ERRORS,
    HEAD_BYTES,
    Generation,
    Moved,
    copy_under_way,
    find,
    gzip_size,
    head_id,
    rotated,
    unread,
)
from collectors.metrics import CollectorMetrics
from collectors.parsers import Parser
from collectors.sink import Batch
from siem.model import Event

log = logging.getLogger("vigil.collect.tail")

# A rotated-away file unchanged for this long has no writer left.
ROTATED_QUIET_S = 5.0


@dataclass
class _Read:
    """What one read of one file gave."""

    events: list[Event]
    pos: Position
    at_end: bool  # everything up to the end of the file is consumed


class Tailer:
    """A source reading new complete lines of every file matching ``globs``.

    Relative globs are taken from ``data_dir``. Lines of files matching
    ``globs`` are read as ECS JSON; ``parsers`` maps more globs to the parser
    of their files (a file matched by several takes the first parser of
    ``parsers``, then ECS). Each :meth:`collect` reads at
    most ``max_bytes`` per file; a line longer than that is stored as an error
    event in pieces rather than stalling the file.
    """

    def __init__(
        self,
        data_dir: Path,
        globs: Sequence[str],
        checkpoints: Checkpoints,
        metrics: CollectorMetrics,
        *,
        parsers: Mapping[str, Parser] | None = None,
        max_bytes: int = 1 << 20,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._data_dir = data_dir
        self._ecs_globs: list[tuple[str, Parser]] = [(pattern, parse_line) for pattern in globs]
        self._globs: list[tuple[str, Parser]] = []
        self.set_parsers(parsers or {})
        # The parser of each file found, by its absolute path.
        self._parser: dict[str, Parser] = {}
        self._checkpoints = checkpoints
        self._metrics = metrics
        self._max_bytes = max_bytes
        self._clock = clock
        self._read: dict[str, Position] = {}
        self._behind: set[str] = set()
        self._moved: set[str] = set()
        # Since when a rotation has looked under way, per file (see _read_behind).
        self._unsettled: dict[str, float] = {}
        self._waiting: set[str] = set()
        # An open compressed generation per tailed path: seeking in gzip means
        # decompressing from the start, so the reader stays where it stopped.
        self._gzip: dict[str, tuple[Path, BinaryIO]] = {}

    def set_parsers(self, parsers: Mapping[str, Parser]) -> None:
        """Tail the globs of ``parsers`` (glob → parser) from now on, instead of the earlier ones.

        Positions are kept: a file tailed before and after goes on where it stopped.
        """
        self._globs = [*parsers.items(), *self._ecs_globs]

    def files(self) -> list[Path]:
        """The files the globs match now, absolute, sorted, each once."""
        found: set[Path] = set()
        for pattern, parser in self._globs:
            full = Path(pattern) if Path(pattern).is_absolute() else self._data_dir / pattern
            for match in glob.glob(str(full)):
                path = Path(match)
                if path.is_file():
                    path = path.resolve()
                    if path not in found:
                        found.add(path)
                        self._parser[str(path)] = parser
        return sorted(found)

    def collect(self) -> list[Batch]:
        """At most ``max_bytes`` of new lines from each file, one batch per file."""
        rv: list[Batch] = []
        paths = self.files()
        live = {str(p) for p in paths}
        for path in paths:
            try:
                batch = self._read_file(path, live)
            except Moved:  # a rotation under way: look again on the next pass
                self._behind.discard(str(path))
                continue
            except OSError as exc:  # vanished or unreadable between glob and open
                self._behind.discard(str(path))
                log.warning(
                    "cannot read log file",
                    extra={"file.path": str(path), "error.message": str(exc)},
                )
                continue
            if batch is not None:
                rv.append(batch)
        return rv

    def behind(self) -> bool:
        """True while a file has unread bytes the next :meth:`collect` can read."""
        return bool(self._behind)

    def _read_file(self, path: Path, live: set[str]) -> Batch | None:
        # Moving on to the next generation reads nothing yet: read it now
        # (a few hops at most, so one call stays bounded).
        batch = self._read_step(path, live)
        for _ in range(3):
            if batch is None or batch.events or str(path) not in self._moved:
                break
            batch = self._read_step(path, live) or batch
        return batch

    def _read_step(self, path: Path, live: set[str]) -> Batch | None:
        name = str(path)
        self._moved.discard(name)
        pos = self._read.get(name) or self._checkpoints.get(name)
        with path.open("rb") as fh:
            stat = os.fstat(fh.fileno())
            if pos is None:
                pos = Position(stat.st_ino, 0, 0)
            if self._is_same(fh, stat, pos) and not self._copied_while_empty(path, pos, live):
                before = pos
                pos = self._refreshed(fh, stat, pos)
                got = self._read_chunk(fh, name, pos, size=stat.st_size, final=False)
                # copytruncate during the read: what was read may be the new
                # contents at the old offset; read the old ones from the copy.
                if self._is_same(fh, os.fstat(fh.fileno()), got.pos):
                    return self._done(name, before, got, stat.st_size - got.pos.offset)
        return self._read_behind(path, name, pos, live)

    @staticmethod
    def _is_same(fh: BinaryIO, stat: os.stat_result, pos: Position) -> bool:
        """Is the live file still the one ``pos`` is in (not rotated, not truncated)?"""
        if pos.inode != stat.st_ino or stat.st_size < pos.offset:
            return False
        if not pos.head:
            return True
        # copytruncate keeps the inode; the file's first bytes tell it apart.
        n = min(len(pos.head), stat.st_size)
        return os.pread(fh.fileno(), n, 0) == pos.head[:n]

    @staticmethod
    def _copied_while_empty(path: Path, pos: Position, live: set[str]) -> bool:
        """Was the live file, empty when last seen, written and copytruncated since?

        Its (empty) head cannot tell; a generation younger than it can.
        """
        if pos.head or pos.offset or not pos.mtime_ns:
            return False
        return any(
            g.mtime_ns > pos.mtime_ns and head_id(g.head()) not in pos.done
            for g in rotated(path, live, settled=False)
        )

    @staticmethod
    def _refreshed(fh: BinaryIO, stat: os.stat_result, pos: Position) -> Position:
        head = pos.head
        if len(head) < HEAD_BYTES and stat.st_size > len(head):
            head = os.pread(fh.fileno(), HEAD_BYTES, 0)
        return replace(pos, head=head, size=stat.st_size, mtime_ns=stat.st_mtime_ns)

    def _read_behind(self, path: Path, name: str, pos: Position, live: set[str]) -> Batch | None:
        """``pos`` is in a file that is no longer the live one: read on from there.

        A rotation under way (generations being renumbered, a copy not yet
        truncated) raises :class:`Moved`; after ``ROTATED_QUIET_S`` of that,
        it is taken as how things are (a generation deleted by hand, a copy
        someone made).
        """
        since = self._unsettled.setdefault(name, time.monotonic())
        settled = time.monotonic() - since < ROTATED_QUIET_S
        rv = self._read_behind_now(path, name, pos, live, settled)
        if name not in self._waiting:
            self._unsettled.pop(name, None)
        self._waiting.discard(name)
        return rv

    def _read_behind_now(
        self, path: Path, name: str, pos: Position, live: set[str], settled: bool
    ) -> Batch | None:
        gens = rotated(path, live, settled=settled)
        index = find(gens, pos)
        if index is None:
            # A directory listed while logrotate renames may miss a file: look again.
            gens = rotated(path, live, settled=settled)
            index = find(gens, pos)
        if index is None:
            # Which generations came after it: younger than it was when last
            # seen, not read before. Unknown for a version-1 checkpoint, which
            # then goes on with the live file, as version 1 did.
            newer = [
                g
                for g in gens
                if pos.mtime_ns and g.mtime_ns >= pos.mtime_ns and head_id(g.head()) not in pos.done
            ]
            lost = (pos.size - pos.offset, "were deleted or overwritten before they were read")
            return self._move(path, name, pos, [], unread(newer, pos), gens, live, lost, settled)
        gen = gens[index]
        quiet = time.time() - gen.mtime_ns / 1e9 > ROTATED_QUIET_S
        try:
            got = self._read_generation(name, gen, pos, quiet)
        except GZIP_ERRORS as exc:
            self._close_gzip(name)
            if not quiet:
                return self._done(name, pos, _Read([], pos, False), 0)  # still being compressed
            log.error(
                "%s: damaged compressed generation, the rest of it is lost",
                gen.path,
                extra={"file.path": name, "error.message": str(exc)},
            )
            got = _Read([], pos, True)
        rest = unread(gens[index + 1 :], pos)
        if not got.at_end:
            left = max(gen.size - got.pos.offset, 0) if not gen.compressed else gen.size
            return self._done(name, pos, got, left + sum(g.size for g in rest) + _size(path))
        if settled and copy_under_way(path, rest):  # stay at its end until then
            self._waiting.add(name)
            return self._done(name, pos, replace(got, at_end=False), sum(g.size for g in rest))
        # Bytes seen in the live file that its rotated copy lacks were
        # overwritten by copytruncate between its copy and its truncate.
        lost = (pos.size - got.pos.offset, f"were not in its rotated copy {gen.path.name}")
        self._close_gzip(name)
        return self._move(path, name, got.pos, got.events, rest, gens, live, lost, settled)

    def _read_generation(self, name: str, gen: Generation, pos: Position, quiet: bool) -> _Read:
        if not gen.compressed:
            with gen.open() as fh:
                size = os.fstat(fh.fileno()).st_size
                pos = replace(pos, size=max(pos.size, size))
                return self._read_chunk(fh, name, pos, size=size, final=quiet)
        path_fh = self._gzip.get(name)
        if path_fh is None or path_fh[0] != gen.path or path_fh[1].tell() != pos.offset:
            self._close_gzip(name)
            gz = gen.open()
            gz.seek(pos.offset)
            self._gzip[name] = path_fh = (gen.path, gz)
        chunk = path_fh[1].read(self._max_bytes)
        at_eof = len(chunk) < self._max_bytes
        events, consumed = self._parse(chunk, name, pos, final=at_eof)
        end = pos.offset + consumed
        if consumed < len(chunk):  # the next read starts at the line's beginning
            path_fh[1].seek(end)
        return _Read(events, replace(pos, offset=end), at_eof and consumed == len(chunk))

    def _move(
        self,
        path: Path,
        name: str,
        pos: Position,
        events: list[Event],
        rest: list[Generation],
        listed: list[Generation],
        live: set[str],
        lost: tuple[int, str],
        settled: bool,
    ) -> Batch:
        """Go on from a finished (or lost) generation to the next one, or the live file.

        ``rest``: the generations after it, of those ``listed``; ``lost``: bytes
        seen in it and not read, and why.
        """
        if settled and copy_under_way(path, rest):
            raise Moved(path)
        done = pos.done
        if pos.head and head_id(pos.head) not in done:
            done = (*done, head_id(pos.head))[-DONE_KEPT:]
        if rest:
            gen = rest[0]
            size = (gzip_size(gen.path) or 0) if gen.compressed else gen.size
            new = Position(gen.inode, pos.generation + 1, 0, gen.head(), size, gen.mtime_ns, done)
            log.info("reading rotated log file %s", gen.path, extra={"file.path": name})
            lag = sum(g.size for g in rest) + _size(path)
        else:
            with path.open("rb") as fh:
                # Its head now: a copytruncate before the first read shows then.
                stat = os.fstat(fh.fileno())
                head = os.pread(fh.fileno(), HEAD_BYTES, 0)
            # The live file rotated after the listing: its old self is unread.
            known = {g.inode for g in listed}
            if any(g.inode not in known for g in rotated(path, live, settled=False)):
                raise Moved(path)
            new = Position(
                stat.st_ino, pos.generation + 1, 0, head, stat.st_size, stat.st_mtime_ns, done
            )
            log.info(
                "log file rotated; reading the new one from the start", extra={"file.path": name}
            )
            lag = stat.st_size
        self._lost(name, *lost)
        self._read[name] = new
        self._moved.add(name)
        self._behind.add(name)
        self._metrics.lag_bytes.labels(file=name).set(lag)
        return Batch(
            events=tuple(events), on_written=functools.partial(self._checkpoints.commit, name, new)
        )

    def _done(self, name: str, before: Position, got: _Read, lag: int) -> Batch | None:
        """Record a read that stayed in its file; a batch when it got anywhere."""
        progressed = got.pos.offset != before.offset
        self._read[name] = got.pos
        self._metrics.lag_bytes.labels(file=name).set(max(lag, 0))
        if progressed and lag > 0:
            self._behind.add(name)
        else:
            self._behind.discard(name)
        if not progressed:
            return None
        return Batch(
            events=tuple(got.events),
            on_written=functools.partial(self._checkpoints.commit, name, got.pos),
        )

    def _lost(self, name: str, lost: int, why: str) -> None:
        if lost <= 0:
            return
        self._metrics.lost_bytes.labels(file=name).inc(lost)
        log.error(
            "%s: %d bytes of the log %s",
            name,
            lost,
            why,
            extra={"file.path": name, "labels.lost_bytes": lost},
        )

    def _close_gzip(self, name: str) -> None:
        path_fh = self._gzip.pop(name, None)
        if path_fh is not None:
            path_fh[1].close()

    def _read_chunk(
        self, source: BinaryIO, name: str, pos: Position, *, size: int, final: bool
    ) -> _Read:
        """Lines of ``source`` (``size`` bytes) from ``pos`` on, at most ``max_bytes``.

        ``final``: nobody writes to it any more (a rotated-away file), so a last
        line without its newline is complete. A multiline group at the end of a
        file quiet for ``ROTATED_QUIET_S`` is complete too.
        """
        if size <= pos.offset:
            return _Read([], pos, True)
        source.seek(pos.offset)
        chunk = source.read(min(self._max_bytes, size - pos.offset))
        to_end = pos.offset + len(chunk) >= size
        quiet = time.time() - os.fstat(source.fileno()).st_mtime > ROTATED_QUIET_S
        events, consumed = self._parse(
            chunk, name, pos, final=final and to_end, flush=(final or quiet) and to_end
        )
        end = pos.offset + consumed
        return _Read(events, replace(pos, offset=end), end >= size)

    def _parse(
        self, chunk: bytes, name: str, pos: Position, *, final: bool = False, flush: bool = False
    ) -> tuple[list[Event], int]:
        """The events of ``chunk`` and the bytes taken: :func:`collectors.lines.parse_chunk`."""
        return lines.parse_chunk(
            chunk,
            self._parser.get(name, parse_line),
            source=name,
            pos=pos,
            max_bytes=self._max_bytes,
            final=final,
            flush=flush,
            now=self._clock(),
            metrics=self._metrics,
        )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
