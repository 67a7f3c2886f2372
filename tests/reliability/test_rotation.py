"""The tailer against rotation, compression, deletion and ``kill -9``, as real processes.

A writer thread appends numbered ECS lines (``seq``) to ``app.log`` and
rotates it the way logrotate or ``RotatingFileHandler`` does, while real
``vigil collect`` processes are started and killed with SIGKILL. At the end
one collector runs until it has caught up; the store must then hold every
line the writer wrote exactly once, and the collectors must have reported no
loss — or, where a generation is deleted unread, exactly what is missing.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from conftest import free_port
from prometheus_client.parser import text_string_to_metric_families

from collectors.ecs import ERROR_DATASET
from siem.model import EventQuery
from siem.sqlite import SqliteStore

REPO = Path(__file__).resolve().parents[2]
DATASET = "reliability.rotation"
KEEP = 50  # generations kept: none of the kill scenarios deletes one
LOST_MESSAGE = "bytes of the log"


def record(seq: int) -> bytes:
    """One log line; ``seq`` first, so every generation starts with different bytes."""
    doc = {
        "seq": seq,
        "@timestamp": "2026-01-01T00:00:00.000Z",
        "event": {"dataset": DATASET},
        "message": "GET /api/products 200",
    }
    return json.dumps(doc).encode() + b"\n"


def shift(log: Path) -> None:
    """app.log.N(.gz) → app.log.N+1(.gz), highest first, as logrotate renumbers."""
    for n in range(KEEP, 0, -1):
        for suffix in ("", ".gz"):
            old = log.with_name(f"{log.name}.{n}{suffix}")
            if old.exists():
                old.rename(log.with_name(f"{log.name}.{n + 1}{suffix}"))


def rename_rotation(log: Path) -> None:
    shift(log)
    log.rename(log.with_name(log.name + ".1"))


def gzip_rotation(log: Path) -> None:
    """logrotate ``compress`` + ``delaycompress``: the generation before last is gzipped."""
    rename_rotation(log)
    plain = log.with_name(log.name + ".2")
    if plain.exists():
        packed = log.with_name(log.name + ".2.gz")
        with plain.open("rb") as src, gzip.open(packed, "wb") as dst:
            shutil.copyfileobj(src, dst)
        stat = plain.stat()
        os.utime(packed, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as gzip(1) keeps it
        plain.unlink()


def copytruncate_rotation(log: Path) -> None:
    shift(log)
    shutil.copyfile(log, log.with_name(log.name + ".1"))
    os.truncate(log, 0)


class Writer(threading.Thread):
    """Appends ``total`` lines in bursts, rotating every ``rotate_every`` lines."""

    def __init__(
        self,
        log: Path,
        total: int,
        *,
        rotate_every: int = 0,
        rotation: Callable[[Path], None] = rename_rotation,
        burst: int = 100,
        pause_s: float = 0.03,
        first: int = 0,
    ) -> None:
        super().__init__(daemon=True)
        self.log, self.total, self.first = log, total, first
        self.rotate_every, self.rotation = rotate_every, rotation
        self.burst, self.pause_s = burst, pause_s
        self.rotations = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._write()
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.error = exc

    def _write(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        fh = self.log.open("ab", buffering=0)
        try:
            for start in range(self.first, self.first + self.total, self.burst):
                stop = min(start + self.burst, self.first + self.total)
                seqs = range(start, stop)
                if self.rotate_every:
                    # Rotate exactly at a multiple of rotate_every, between two lines.
                    cut = next((s for s in seqs if s and s % self.rotate_every == 0), None)
                    if cut is not None:
                        fh.write(b"".join(record(s) for s in range(start, cut)))
                        fh.close()
                        self.rotation(self.log)
                        self.rotations += 1
                        fh = self.log.open("ab", buffering=0)
                        seqs = range(cut, stop)
                fh.write(b"".join(record(s) for s in seqs))
                time.sleep(self.pause_s)
        finally:
            fh.close()


class Collectors:
    """Starts ``vigil collect`` processes on one config and data dir, one at a time."""

    def __init__(self, tmp_path: Path, logs: Path) -> None:
        self.data = tmp_path / "data"
        self.config = tmp_path / "vigil.yaml"
        self.config.write_text(
            textwrap.dedent(
                f"""\
                collect:
                  scrape_stack: false
                  interval_s: 0.1
                  tail: ["{logs}/*.log"]
                """
            )
        )
        self.runs = 0
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def stderr_of(self, run: int) -> Path:
        return self.data.parent / f"collector-{run}.stderr"

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "vigil.cli", "--config", str(self.config), "collect", *args]

    def env(self) -> dict[str, str]:
        return dict(os.environ, VIGIL_DATA_DIR=str(self.data), VIGIL_COLLECT_PORT=str(self.port))

    def start(self) -> None:
        self.runs += 1
        self.port = free_port()
        with self.stderr_of(self.runs).open("wb") as err:
            self.proc = subprocess.Popen(
                self.command(), env=self.env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=err
            )

    def wait_started(self, timeout_s: float = 30.0) -> None:
        """Until the running collector has logged that its loop runs."""
        deadline = time.monotonic() + timeout_s
        while b"collector started" not in self.stderr_of(self.runs).read_bytes():
            assert self.proc is not None and self.proc.poll() is None
            assert time.monotonic() < deadline, "the collector did not start"
            time.sleep(0.02)

    def once(self) -> None:
        self.runs += 1
        with self.stderr_of(self.runs).open("wb") as err:
            done = subprocess.run(
                self.command("--once"), env=self.env(), cwd=REPO, stderr=err, timeout=60
            )
        assert done.returncode == 0, self.stderr_of(self.runs).read_text()[-2000:]

    def kill(self) -> None:
        assert self.proc is not None
        assert self.proc.poll() is None, self.stderr_of(self.runs).read_text()[-2000:]
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=60) == 0, self.stderr_of(self.runs).read_text()[-2000:]

    def metric(self, name: str, **labels: str) -> float:
        """A sample from the running collector's /metrics (0 when absent)."""
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    return float(s.value)
        return 0.0

    def stored(self) -> dict[int, int]:
        """How often each ``seq`` is in the store."""
        if not (self.data / "siem.db").exists():
            return {}
        store = SqliteStore(self.data / "siem.db")
        try:
            counts = store.count_by(EventQuery(dataset=DATASET), "seq")
        finally:
            store.close()
        return {int(seq): n for seq, n in counts.items()}

    def errors_stored(self) -> int:
        store = SqliteStore(self.data / "siem.db")
        try:
            return len(store.search(EventQuery(dataset=ERROR_DATASET, limit=10)))
        finally:
            store.close()

    def catch_up(self, expected: int, timeout_s: float = 60.0) -> dict[int, int]:
        """Run one collector until the store holds ``expected`` lines (or time is up)."""
        self.start()
        self.wait_started()  # a SIGTERM before the handler is set would kill it
        deadline = time.monotonic() + timeout_s
        stored = self.stored()
        while len(stored) < expected and time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None
            time.sleep(0.5)
            stored = self.stored()
        return stored

    def reported_loss(self) -> list[str]:
        """Lines of the collectors' logs that report lost log data."""
        rv = []
        for run in range(1, self.runs + 1):
            rv += [
                line
                for line in self.stderr_of(run).read_text(errors="replace").splitlines()
                if LOST_MESSAGE in line
            ]
        return rv


def kill_while_writing(collectors: Collectors, writer: Writer, max_kills: int) -> int:
    """Start and SIGKILL collectors at random moments; how many were killed during writes.

    A first line is collected before: a collector that never ran cannot know
    which generations it missed (it starts with the live file).
    """
    writer.log.parent.mkdir(parents=True, exist_ok=True)
    writer.log.write_bytes(record(0))
    writer.first, writer.total = 1, writer.total - 1
    collectors.once()
    rng = random.Random(7)
    kills = during_writes = 0
    # At least three kills, more while the writer runs; some land while the
    # collector catches up after the writer is done. The writer starts with
    # the first collector, so that one is killed while lines are written.
    while (writer.is_alive() or kills < 3) and kills < max_kills:
        collectors.start()
        collectors.wait_started()
        if kills == 0:
            writer.start()
        time.sleep(rng.uniform(0.05, 0.8))
        during_writes += writer.is_alive()
        collectors.kill()
        kills += 1
    writer.join(timeout=60)
    assert writer.error is None, writer.error
    return during_writes


def assert_exactly_once(collectors: Collectors, total: int) -> None:
    stored = collectors.catch_up(total)
    collectors.stop()
    missing = sorted(set(range(total)) - set(stored))
    duplicated = {seq: n for seq, n in stored.items() if n > 1}
    assert missing == [], f"{len(missing)} lines lost, first {missing[:10]}"
    assert duplicated == {}
    assert len(stored) == total
    assert collectors.errors_stored() == 0  # no line was read in pieces
    assert collectors.reported_loss() == []


def test_rotation_kill_9_plain_file(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "app.log"
    collectors = Collectors(tmp_path, log.parent)
    writer = Writer(log, 12_000)
    assert kill_while_writing(collectors, writer, max_kills=10) >= 1
    assert_exactly_once(collectors, 12_000)


def test_rotation_rename_while_killed(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "app.log"
    collectors = Collectors(tmp_path, log.parent)
    writer = Writer(log, 12_000, rotate_every=1_500, rotation=rename_rotation)
    assert kill_while_writing(collectors, writer, max_kills=10) >= 1
    assert writer.rotations == 7
    assert_exactly_once(collectors, 12_000)


def test_rotation_copytruncate_while_killed(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "app.log"
    collectors = Collectors(tmp_path, log.parent)
    writer = Writer(log, 12_000, rotate_every=1_500, rotation=copytruncate_rotation)
    assert kill_while_writing(collectors, writer, max_kills=10) >= 1
    assert writer.rotations == 7
    assert_exactly_once(collectors, 12_000)


def test_rotation_gzip_generations_behind(tmp_path: Path) -> None:
    """The collector is down for several rotations; the ones it missed are compressed."""
    log = tmp_path / "logs" / "app.log"
    collectors = Collectors(tmp_path, log.parent)
    Writer(log, 2_000, pause_s=0).run()
    collectors.once()  # app.log read once, then the collector is down
    writer = Writer(log, 10_000, first=2_000, rotate_every=2_000, rotation=gzip_rotation)
    writer.run()
    assert writer.error is None, writer.error
    packed = sorted(p.name for p in log.parent.glob("app.log.*.gz"))
    assert len(packed) == 4, packed  # app.log.2.gz … app.log.5.gz; app.log.1 is plain
    assert_exactly_once(collectors, 12_000)


def test_rotation_deleted_generation_counts_exactly_what_was_lost(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "app.log"
    collectors = Collectors(tmp_path, log.parent)
    first_gen = 15_000  # ~1.3 MiB: one collector pass (1 MiB per file) reads part of it
    Writer(log, first_gen, pause_s=0).run()
    collectors.once()
    read = set(collectors.stored())
    assert 0 < len(read) < first_gen
    rename_rotation(log)
    Writer(log, 1_000, first=first_gen, pause_s=0).run()
    rename_rotation(log)
    Writer(log, 1_000, first=first_gen + 1_000, pause_s=0).run()
    log.with_name("app.log.2").unlink()  # the first generation, read only in part
    total = first_gen + 2_000
    unread = sorted(set(range(first_gen)) - read)
    stored = collectors.catch_up(total - len(unread))
    lost_bytes = collectors.metric("vigil_collector_lost_bytes_total", file=str(log.resolve()))
    collectors.stop()
    assert sorted(set(range(total)) - set(stored)) == unread
    assert all(n == 1 for n in stored.values())
    assert lost_bytes == sum(len(record(seq)) for seq in unread)
    (report,) = collectors.reported_loss()
    assert '"log.level":"error"' in report
    assert str(log.resolve()) in report
