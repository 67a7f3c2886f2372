"""The tailer: complete lines, error events, checkpoints after commit, rotation."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from collectors.ecs import ERROR_DATASET
from collectors.errors import CollectorError
from collectors.metrics import CollectorMetrics
from collectors.sink import Batch
from collectors.tail import CHECKPOINT_FILE, ROTATED_QUIET_S, Checkpoints, Position, Tailer
from siem.model import Event


def line(n: int) -> bytes:
    doc = {"@timestamp": "2024-05-01T12:00:00Z", "event": {"dataset": "shop.app"}, "n": n}
    return json.dumps(doc).encode() + b"\n"


def make_tailer(data_dir: Path, max_bytes: int = 1 << 20) -> tuple[Tailer, CollectorRegistry]:
    registry = CollectorRegistry()
    tailer = Tailer(
        data_dir,
        ["logs/*.log"],
        Checkpoints(data_dir / CHECKPOINT_FILE),
        CollectorMetrics(registry),
        max_bytes=max_bytes,
        clock=lambda: 1e9,
    )
    return tailer, registry


def events_of(batches: list[Batch], commit: bool = True) -> list[Event]:
    for batch in batches:
        if commit and batch.on_written is not None:
            batch.on_written()
    return [e for b in batches for e in b.events]


def write(path: Path, data: bytes, mode: str = "ab") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open(mode) as fh:
        fh.write(data)


def test_tail_reads_complete_lines_only(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "app.log"
    write(log, line(1) + line(2) + b'{"partial": ')
    tailer, _ = make_tailer(tmp_path)
    events = events_of(tailer.collect())
    assert [e.doc["n"] for e in events] == [1, 2]
    assert events[1].get("log.offset") == len(line(1))
    assert events[0].get("log.file.path") == str(log.resolve())
    assert tailer.collect() == []  # the partial line waits for its newline
    write(log, b"1}\n")
    (event,) = events_of(tailer.collect())
    assert event.doc["partial"] == 1
    assert event.get("log.offset") == len(line(1) + line(2))


def test_tail_garbage_line_becomes_error_event(tmp_path: Path) -> None:
    write(tmp_path / "logs" / "app.log", line(1) + b"not json at all\r\n\n" + line(2))
    tailer, registry = make_tailer(tmp_path)
    events = events_of(tailer.collect())
    assert [e.dataset for e in events] == ["shop.app", ERROR_DATASET, "shop.app"]
    assert events[1].get("event.original") == "not json at all"
    assert "not JSON" in events[1].get("error.message")
    assert registry.get_sample_value("vigil_collector_parse_errors_total") == 1


def test_tail_checkpoint_only_after_commit(tmp_path: Path) -> None:
    write(tmp_path / "logs" / "app.log", line(1))
    tailer, _ = make_tailer(tmp_path)
    uncommitted = events_of(tailer.collect(), commit=False)
    assert not (tmp_path / CHECKPOINT_FILE).exists()
    # A restart before the store write re-reads the same lines, with the same ids.
    restarted, _ = make_tailer(tmp_path)
    again = events_of(restarted.collect())
    assert [e.id for e in again] == [e.id for e in uncommitted]
    saved = json.loads((tmp_path / CHECKPOINT_FILE).read_text())
    (entry,) = saved["files"].values()
    assert entry["offset"] == len(line(1))


def test_tail_restart_continues_where_it_stopped(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "app.log"
    write(log, line(1))
    tailer, _ = make_tailer(tmp_path)
    events_of(tailer.collect())
    write(log, line(2))
    restarted, _ = make_tailer(tmp_path)
    assert [e.doc["n"] for e in events_of(restarted.collect())] == [2]


def test_tail_truncation_rereads_with_new_ids(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "app.log"
    write(log, line(1) + line(2))
    tailer, _ = make_tailer(tmp_path)
    old = events_of(tailer.collect())
    write(log, line(3), mode="wb")
    (new,) = events_of(tailer.collect())
    assert new.doc["n"] == 3
    assert new.id != old[0].id  # same offset 0, but a new generation of the file


def test_tail_rotation_reads_new_file_from_start(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "app.log"
    write(log, line(1) + line(2) + line(3))
    tailer, _ = make_tailer(tmp_path)
    events_of(tailer.collect())
    os.rename(log, tmp_path / "logs" / "app.log.1")
    write(log, line(4) + line(5) + line(6) + line(7))  # bigger than the old offset
    restarted, _ = make_tailer(tmp_path)
    assert [e.doc["n"] for e in events_of(restarted.collect())] == [4, 5, 6, 7]


def collect_all(tailer: Tailer) -> list[int]:
    """Collect until nothing new comes, as the collector loop does every interval."""
    rv: list[int] = []
    for _ in range(10):
        batches = tailer.collect()
        if not batches:
            return rv
        rv += [e.doc["n"] for e in events_of(batches) if "n" in e.doc]
    raise AssertionError("the tailer never ran dry")


@pytest.mark.parametrize("restart", [False, True], ids=["running", "restarted"])
def test_tail_rotation_keeps_lines_written_just_before_it(tmp_path: Path, restart: bool) -> None:
    """Lines written after the last read and then rotated away (to a name the
    globs do not match) are read from the old file before the new one."""
    log = tmp_path / "logs" / "app.log"
    write(log, line(1) + line(2))
    tailer, _ = make_tailer(tmp_path)
    assert collect_all(tailer) == [1, 2]
    write(log, line(3) + line(4))
    os.rename(log, tmp_path / "logs" / "app.log.1")
    write(log, line(5))
    if restart:
        tailer, _ = make_tailer(tmp_path)
    assert collect_all(tailer) == [3, 4, 5]
    write(log, line(6))
    assert collect_all(tailer) == [6]


def test_tail_rotated_file_in_pieces_and_last_line_without_newline(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "app.log"
    write(log, line(1))
    tailer, _ = make_tailer(tmp_path, max_bytes=len(line(1)) * 2)
    assert collect_all(tailer) == [1]
    write(log, line(2) + line(3) + line(4) + line(5) + line(6)[:-1])  # the writer died mid-line
    rotated = tmp_path / "logs" / "app.log.1"
    os.rename(log, rotated)
    write(log, line(7))
    # While the old file may still have a writer, its unfinished line waits...
    assert collect_all(tailer) == [2, 3, 4, 5]
    # ...once it has been quiet for a while, that line is whole.
    quiet = time.time() - ROTATED_QUIET_S - 1
    os.utime(rotated, (quiet, quiet))
    assert collect_all(tailer) == [6, 7]


def test_tail_rotation_never_mistakes_another_live_log_for_the_old_file(
    tmp_path: Path,
) -> None:
    """An inode reused by another tailed log is that log's, not app.log's past."""
    audit = tmp_path / "logs" / "audit.log"
    write(audit, line(100) + line(101))
    app = tmp_path / "logs" / "app.log"
    write(app, line(1))
    checkpoints = Checkpoints(tmp_path / CHECKPOINT_FILE)
    checkpoints.commit(str(app.resolve()), Position(audit.stat().st_ino, 0, 0))
    tailer, _ = make_tailer(tmp_path)
    assert sorted(collect_all(tailer)) == [1, 100, 101]  # each line once, under its own file


def test_tail_corrupt_checkpoint_starts_over(tmp_path: Path) -> None:
    write(tmp_path / "logs" / "app.log", line(1))
    (tmp_path / CHECKPOINT_FILE).write_text("{not json")
    tailer, _ = make_tailer(tmp_path)
    assert len(events_of(tailer.collect())) == 1
    assert (tmp_path / (CHECKPOINT_FILE + ".corrupt")).read_text() == "{not json"


def test_tail_overlong_line_is_stored_in_error_pieces(tmp_path: Path) -> None:
    write(tmp_path / "logs" / "app.log", b"x" * 25 + b"\n" + line(1))
    tailer, _ = make_tailer(tmp_path, max_bytes=10)
    events: list[Event] = []
    for _ in range(10):
        events += events_of(tailer.collect())
    assert [e.dataset for e in events[:3]] == [ERROR_DATASET] * 3
    assert "".join(e.get("event.original") for e in events[:3]) == "x" * 25


def test_tail_unreadable_checkpoints_refuse_to_start(tmp_path: Path) -> None:
    (tmp_path / CHECKPOINT_FILE).mkdir()
    with pytest.raises(CollectorError, match="cannot read checkpoints"):
        Checkpoints(tmp_path / CHECKPOINT_FILE)


def test_tail_checkpoints_roundtrip(tmp_path: Path) -> None:
    checkpoints = Checkpoints(tmp_path / "c.json")
    checkpoints.commit("/a.log", Position(5, 1, 100))
    assert Checkpoints(tmp_path / "c.json").get("/a.log") == Position(5, 1, 100)
