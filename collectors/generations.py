"""A log file's rotated generations: finding them, knowing them again, reading them.

Rotation leaves the old contents of ``app.log`` next to it under a longer name:
``app.log.1``, ``app.log.2`` (logrotate, Python's ``RotatingFileHandler``),
``app.log-20240501`` (logrotate ``dateext``), compressed as ``app.log.2.gz``
(logrotate ``compress``/``delaycompress``). A file is known again by its
*head*, its first :data:`HEAD_BYTES` bytes, which rename, copy (copytruncate)
and gzip all keep; for an uncompressed file a renamed inode is also its own.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from collectors.checkpoints import Position

# Enough bytes to tell two generations apart: JSON log lines start with a
# millisecond timestamp and differ within the first line.
HEAD_BYTES = 256
# A rotation index (not a date): app.log.3, app.log.3.gz.
_INDEX = re.compile(r"\.(\d{1,4})(?:\.gz)?")
# Errors of a gzip file that is damaged or still being written.
GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)


class Moved(Exception):
    """The generations were renamed while being looked at (a rotation under way): look again."""


@dataclass(frozen=True)
class Generation:
    """One rotated-away file of a log: where it is and what it looks like on disk."""

    path: Path
    inode: int
    size: int  # bytes on disk (compressed size for a .gz)
    mtime_ns: int

    @property
    def compressed(self) -> bool:
        return self.path.name.endswith(".gz")

    def open(self) -> BinaryIO:
        """The file's (decompressed) contents, positioned at 0.

        Raises :class:`Moved` when another file has its name by now.
        """
        fh = self._gzip() if self.compressed else self.path.open("rb")
        if os.fstat(fh.fileno()).st_ino != self.inode:
            fh.close()
            raise Moved(self.path)
        return fh

    def _gzip(self) -> BinaryIO:
        return gzip.GzipFile(self.path, "rb")  # type: ignore[return-value]

    def head(self, length: int = HEAD_BYTES) -> bytes:
        """Its first ``length`` (decompressed) bytes; fewer when it is shorter or damaged."""
        try:
            with self.open() as fh:
                return fh.read(length)
        except FileNotFoundError:
            raise Moved(self.path) from None
        except (OSError, *GZIP_ERRORS):
            return b""


def head_id(head: bytes) -> str:
    """A short stable name for a generation's head, kept in the checkpoint."""
    return hashlib.sha1(head, usedforsecurity=False).hexdigest()[:16]


def rotated(path: Path, live: set[str], *, settled: bool = True) -> list[Generation]:
    """The rotated generations of ``path`` in its directory, oldest first.

    Files the collector tails under their own name (``live``) are not
    generations of another one. When every one is numbered (``app.log.1``,
    ``app.log.2.gz``) the number says the order, higher is older, as logrotate
    and ``RotatingFileHandler`` number them; otherwise (``app.log-20240501``)
    the last modification does.

    ``settled``: numbered generations with a gap (``.1`` and ``.3`` but no
    ``.2``) are being renumbered, or the listing missed a renamed one; raise
    :class:`Moved` rather than skip one.
    """
    found: list[tuple[int | None, Generation]] = []
    prefix = path.name
    try:
        with os.scandir(path.parent) as entries:
            for entry in entries:
                rest = entry.name[len(prefix) :]
                if not entry.name.startswith(prefix) or not rest or rest[0] not in ".-_":
                    continue
                if entry.path in live:
                    continue
                try:
                    if not entry.is_file(follow_symlinks=False):
                        continue
                    st = entry.stat(follow_symlinks=False)
                except OSError:  # renamed or deleted while listing
                    continue
                number = _INDEX.fullmatch(rest)
                gen = Generation(Path(entry.path), st.st_ino, st.st_size, st.st_mtime_ns)
                found.append((int(number.group(1)) if number else None, gen))
    except OSError:
        return []
    numbers = {n for n, _ in found}
    if None not in numbers:
        if settled and numbers and numbers != set(range(1, len(numbers) + 1)):
            raise Moved(path)
        found.sort(key=lambda item: -(item[0] or 0))
    else:
        found.sort(key=lambda item: (item[1].mtime_ns, item[1].path.name))
    return [gen for _, gen in found]


def gzip_size(path: Path) -> int | None:
    """The uncompressed size a complete gzip file states in its trailer (mod 4 GiB)."""
    try:
        with path.open("rb") as fh:
            fh.seek(-4, os.SEEK_END)
            return int.from_bytes(fh.read(4), "little")
    except OSError:
        return None


def find(gens: list[Generation], pos: Position) -> int | None:
    """Which of ``gens`` is the file ``pos`` is in (renamed, copied or compressed)."""
    for i, gen in enumerate(gens):  # a renamed file first: its own inode
        if (
            not gen.compressed
            and gen.inode == pos.inode
            and gen.size >= pos.offset
            and (not pos.head or gen.head(len(pos.head)) == pos.head)
        ):
            return i
    if not pos.head:
        return None  # a version-1 checkpoint knows the file by its inode only
    for i, gen in enumerate(gens):
        if (gen.compressed or gen.size >= pos.offset) and gen.head(len(pos.head)) == pos.head:
            return i
    return None


def unread(gens: list[Generation], pos: Position) -> list[Generation]:
    """``gens`` without compressed copies of the file ``pos`` is in.

    While logrotate compresses ``app.log.2``, ``app.log.2.gz`` is there beside
    it. Only compressed twins are skipped: two plain generations that begin
    alike are both read.
    """
    if not pos.head:
        return gens
    return [g for g in gens if not (g.compressed and g.head(len(pos.head)) == pos.head)]


def copy_under_way(path: Path, rest: list[Generation]) -> bool:
    """Does a generation still to read begin like the live file?

    Then copytruncate has copied it (or is copying it) and not truncated it
    yet: going on would read the same lines twice, from the copy and the file.
    """
    try:
        with path.open("rb") as fh:
            live = fh.read(HEAD_BYTES)
    except OSError:
        return False
    for gen in rest:
        head = gen.head()
        n = min(len(head), len(live))
        if n and head[:n] == live[:n]:
            return True
    return False
