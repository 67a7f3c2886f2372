"""Under ``vigil up``, show the children's output on the terminal as short human lines.

Children write to ``<data_dir>/run/<name>.log`` (ECS JSON, since that is no
terminal); that file stays the full record. ``ChildEcho`` follows those files
from their current end and prints each new line through
``vigil.logging.human_from_ecs``: access lines are left out, text that is not
JSON (a traceback, gunicorn's own output) is shown prefixed with the child's
name. Following files rather than piping the children keeps them independent of
the supervisor's terminal. Example::

    echo = ChildEcho({"collect": Path("data/run/collect.log")}, sys.stderr)
    echo.start()
    ...
    echo.stop()
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from vigil.logging import human_from_ecs

log = logging.getLogger(__name__)

MAX_READ = 1024 * 1024


class ChildEcho:
    """Follows each child's log file and prints new complete lines, rendered for people."""

    def __init__(self, files: Mapping[str, Path], out: TextIO, *, interval_s: float = 0.2) -> None:
        self.files = dict(files)
        self.out = out
        self.interval_s = interval_s
        self._offsets = {name: _size(path) for name, path in self.files.items()}
        self._partial: dict[str, bytes] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="child-echo", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Print what is left, then stop."""
        self._stop.set()
        self._thread.join(timeout=5)

    def poll(self) -> int:
        """Print every new complete line once; returns how many lines were read."""
        n = 0
        for name, path in self.files.items():
            for line in self._new_lines(name, path):
                n += 1
                text = human_from_ecs(line.decode("utf-8", "replace"), name)
                if text is not None:
                    print(text, file=self.out, flush=True)
        return n

    def _new_lines(self, name: str, path: Path) -> list[bytes]:
        size = _size(path)
        offset = self._offsets.get(name, 0)
        if size < offset:  # truncated or replaced: start again from the top
            offset = 0
            self._partial.pop(name, None)
        if size == offset:
            return []
        try:
            with path.open("rb") as f:
                f.seek(offset)
                chunk = f.read(MAX_READ)
        except OSError:
            return []
        self._offsets[name] = offset + len(chunk)
        data = self._partial.pop(name, b"") + chunk
        lines = data.split(b"\n")
        if lines[-1]:
            self._partial[name] = lines[-1]  # unfinished: wait for its newline
        return lines[:-1]

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.poll()
            except Exception:  # the terminal closing must not stop the supervisor
                log.debug("echoing child output failed", exc_info=True)
                return
        try:
            self.poll()
        except Exception:
            log.debug("echoing child output failed", exc_info=True)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
