"""Tail ECS JSON log files, with offsets checkpointed after the store accepted the data.

Checkpoints live in ``<data_dir>/collect-checkpoints.json`` as
``{"version": 1, "files": {path: {"inode", "generation", "offset"}}}``. A file
whose inode changed (rotation) or that shrank below the offset (truncation)
is read again from 0 under the next *generation*. Event ids hash the path and
the line's position: the byte offset in generation 0, ``"<generation>:<offset>"``
after a reset, so lines of a rewritten file never collide with the old ones.

Rotation loses nothing that is still on disk: before moving on to the new
file, the tailer looks in the same directory for the old inode under its new
name (``app.log.1``, as logrotate and Python's RotatingFileHandler leave it)
and reads what was written there after the checkpoint — also after a collector
restart, since the checkpoint keeps the inode. Its last line without a newline
is taken as whole once the file has been quiet for ``ROTATED_QUIET_S`` (a
writer may still hold it open). Only lines of a file deleted before the tailer
saw them are gone.
"""

from __future__ import annotations

import functools
import glob
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

from collectors.ecs import error_event, parse_line
from collectors.errors import CollectorError, LineError
from collectors.metrics import CollectorMetrics
from collectors.sink import Batch
from siem.model import Event

log = logging.getLogger("vigil.collect.tail")

CHECKPOINT_FILE = "collect-checkpoints.json"
# A rotated-away file unchanged for this long has no writer left.
ROTATED_QUIET_S = 5.0


@dataclass(frozen=True)
class Position:
    """Where reading of one file stands."""

    inode: int
    generation: int
    offset: int

    def line_position(self, offset: int) -> int | str:
        return offset if self.generation == 0 else f"{self.generation}:{offset}"


class Checkpoints:
    """Committed positions per absolute path, persisted atomically as JSON."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._files: dict[str, Position] = self._load()

    def _load(self) -> dict[str, Position]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return {
                str(name): Position(int(p["inode"]), int(p["generation"]), int(p["offset"]))
                for name, p in data["files"].items()
            }
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise CollectorError(
                f"{self.path}: cannot read checkpoints ({exc.strerror}); fix its permissions"
            ) from None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # Starting over is safe: re-read lines keep their ids and are stored once.
            broken = self.path.with_name(self.path.name + ".corrupt")
            log.error(
                "checkpoint file unreadable, moved aside; reading all files from the start",
                extra={"file.path": str(self.path), "error.message": str(exc)},
            )
            self.path.replace(broken)
            return {}

    def get(self, name: str) -> Position | None:
        return self._files.get(name)

    def commit(self, name: str, position: Position) -> None:
        """Record ``position`` as stored and persist all checkpoints."""
        self._files[name] = position
        data = {"version": 1, "files": {k: asdict(v) for k, v in sorted(self._files.items())}}
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            # The store has the data; on restart the lines are re-read and deduplicated.
            log.error(
                "could not save checkpoints",
                extra={"file.path": str(self.path), "error.message": str(exc)},
            )


class Tailer:
    """A source reading new complete lines of every file matching ``globs``.

    Relative globs are taken from ``data_dir``. Each :meth:`collect` reads at
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
        max_bytes: int = 1 << 20,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._data_dir = data_dir
        self._globs = list(globs)
        self._checkpoints = checkpoints
        self._metrics = metrics
        self._max_bytes = max_bytes
        self._clock = clock
        self._read: dict[str, Position] = {}

    def files(self) -> list[Path]:
        """The files the globs match now, absolute, sorted, each once."""
        found: set[Path] = set()
        for pattern in self._globs:
            full = Path(pattern) if Path(pattern).is_absolute() else self._data_dir / pattern
            found.update(Path(p).resolve() for p in glob.glob(str(full)) if Path(p).is_file())
        return sorted(found)

    def collect(self) -> list[Batch]:
        rv: list[Batch] = []
        for path in self.files():
            try:
                batch = self._read_file(path)
            except OSError as exc:  # vanished or unreadable between glob and open
                log.warning(
                    "cannot read log file",
                    extra={"file.path": str(path), "error.message": str(exc)},
                )
                continue
            if batch is not None:
                rv.append(batch)
        return rv

    def _read_file(self, path: Path) -> Batch | None:
        name = str(path)
        with path.open("rb") as fh:
            stat = os.fstat(fh.fileno())
            pos = self._read.get(name) or self._checkpoints.get(name)
            if pos is None:
                pos = Position(stat.st_ino, 0, 0)
            elif pos.inode != stat.st_ino:
                rotated = self._rotated_away(path, pos)
                if rotated is not None:
                    # The rest of the old file first, under its old position and ids.
                    with rotated.open("rb") as old:
                        st = os.fstat(old.fileno())
                        # A writer that still has it open may be mid-line; once it
                        # has been quiet a while, a last line without newline is whole.
                        quiet = time.time() - st.st_mtime > ROTATED_QUIET_S
                        return self._read_from(old, name, pos, size=st.st_size, final=quiet)
                log.info(
                    "log file rotated; reading the new one from the start",
                    extra={"file.path": name},
                )
                pos = Position(stat.st_ino, pos.generation + 1, 0)
            elif stat.st_size < pos.offset:
                log.info("log file truncated; reading it from the start", extra={"file.path": name})
                pos = Position(stat.st_ino, pos.generation + 1, 0)
            self._read[name] = pos
            return self._read_from(fh, name, pos, size=stat.st_size, final=False)

    def _read_from(
        self, source: BinaryIO, name: str, pos: Position, *, size: int, final: bool
    ) -> Batch | None:
        """Lines of ``source`` (``size`` bytes) from ``pos`` on, as events of ``name``.

        ``final``: nobody writes to it any more (a rotated-away file), so a last
        line without its newline is complete.
        """
        if size <= pos.offset:
            return None
        source.seek(pos.offset)
        chunk = source.read(min(self._max_bytes, size - pos.offset))
        events, consumed = self._parse(
            chunk, name, pos, final=final and pos.offset + len(chunk) >= size
        )
        if consumed == 0:
            return None  # only a partial line so far; the writer is mid-line
        new_pos = Position(pos.inode, pos.generation, pos.offset + consumed)
        self._read[name] = new_pos
        return Batch(
            events=tuple(events),
            on_written=functools.partial(self._checkpoints.commit, name, new_pos),
        )

    def _rotated_away(self, path: Path, pos: Position) -> Path | None:
        """The old file of ``path`` under its new name in the same directory, if
        it is still there and has lines after ``pos``.

        A file the globs tail under its own name is never taken for it: its
        inode is another live log's, reused after the old file was deleted.
        """
        live = {str(p) for p in self.files()}
        try:
            with os.scandir(path.parent) as entries:
                for entry in entries:
                    if (
                        entry.inode() == pos.inode
                        and entry.path not in live
                        and entry.is_file(follow_symlinks=False)
                        and entry.stat(follow_symlinks=False).st_size > pos.offset
                    ):
                        return Path(entry.path)
        except OSError:
            return None
        return None

    def _parse(
        self, chunk: bytes, name: str, pos: Position, *, final: bool = False
    ) -> tuple[list[Event], int]:
        end = len(chunk) if final else chunk.rfind(b"\n") + 1
        if end == 0 and len(chunk) >= self._max_bytes:
            end = len(chunk)  # one line longer than max_bytes: store it as an error piece
        now = self._clock()
        events: list[Event] = []
        start = 0
        while start < end:
            stop = chunk.find(b"\n", start, end)
            stop = end if stop < 0 else stop
            raw = chunk[start:stop].rstrip(b"\r")
            offset = pos.offset + start
            start = stop + 1
            if not raw.strip():
                continue  # blank lines carry nothing
            line_pos = pos.line_position(offset)
            try:
                event = parse_line(raw, source=name, position=line_pos, offset=offset, now=now)
            except LineError as exc:
                self._metrics.parse_errors.inc()
                event = error_event(
                    raw, str(exc), source=name, position=line_pos, offset=offset, now=now
                )
            events.append(event)
        return events, end
