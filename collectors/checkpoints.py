"""Where the tailer stands in each file, saved once the store has what it read.

Checkpoints live in ``<data_dir>/collect-checkpoints.json`` as ``{"version":
2, "files": {path: {"inode", "generation", "offset", "head", "size",
"mtime_ns", "done"}}}``; version-1 files (``inode``, ``generation``,
``offset`` only) are read as they are and saved as version 2. Event ids hash
the path and the line's position (:meth:`Position.line_position`): the byte
offset in generation 0, ``"<generation>:<offset>"`` in later ones, so lines of
a rewritten file never collide with the old ones and a line re-read after a
restart keeps its id.

The file is replaced atomically on each commit; one that cannot be read is
moved aside (``.corrupt``) and reading starts over, which is safe: re-read
lines keep their ids and are stored once.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collectors.errors import CollectorError

log = logging.getLogger("vigil.collect.tail")

CHECKPOINT_FILE = "collect-checkpoints.json"
CHECKPOINT_VERSION = 2
# Generations read to their end, remembered so that none is read twice.
DONE_KEPT = 32


@dataclass(frozen=True)
class Position:
    """Where reading of one file (one generation of a tailed path) stands.

    ``head`` (its first bytes) knows the file again after a rename, copy or
    compression; ``size`` and ``mtime_ns`` are as last seen (what is lost if
    it vanishes unread; which generations are newer); ``done`` names the
    generations already read to their end.
    """

    inode: int
    generation: int
    offset: int
    head: bytes = b""
    size: int = 0
    mtime_ns: int = 0
    done: tuple[str, ...] = ()

    def line_position(self, offset: int) -> int | str:
        return offset if self.generation == 0 else f"{self.generation}:{offset}"

    def to_json(self) -> dict[str, Any]:
        return {
            "inode": self.inode,
            "generation": self.generation,
            "offset": self.offset,
            "head": base64.b64encode(self.head).decode("ascii"),
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "done": list(self.done),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Position:
        """Version 2, or version 1 (no head: the file is known by its inode alone)."""
        done = data.get("done", [])
        if not isinstance(done, list):
            raise TypeError("done is not a list")
        return cls(
            int(data["inode"]),
            int(data["generation"]),
            int(data["offset"]),
            base64.b64decode(data.get("head", ""), validate=True),
            int(data.get("size", data["offset"])),
            int(data.get("mtime_ns", 0)),
            tuple(str(d) for d in done),
        )


class Checkpoints:
    """Committed positions per absolute path, persisted atomically as JSON."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._files: dict[str, Position] = self._load()

    def _load(self) -> dict[str, Position]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("version", 1) not in (1, CHECKPOINT_VERSION):
                raise ValueError(f"unknown checkpoint version {data.get('version')!r}")
            return {str(name): Position.from_json(p) for name, p in data["files"].items()}
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
        data = {
            "version": CHECKPOINT_VERSION,
            "files": {k: v.to_json() for k, v in sorted(self._files.items())},
        }
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
