"""The tailer: complete lines, error events, checkpoints after commit, rotation."""

from __future__ import annotations

import gzip
import json
import os
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from collectors.checkpoints import CHECKPOINT_FILE, Checkpoints, Position
from collectors.ecs import ERROR_DATASET
from collectors.errors import CollectorError
from collectors.metrics import CollectorMetrics
from collectors.sink import Batch
from collectors.tail import ROTATED_QUIET_S, Tailer
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
    for _ in range(50):
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


def lines(first: int, last: int) -> bytes:
    return b"".join(line(n) for n in range(first, last + 1))


def rotate(log: Path, keep: int = 10) -> None:
    """Rename rotation as logrotate does it: .1 → .2 …, app.log → app.log.1."""
    for n in range(keep, 0, -1):
        old = log.with_name(f"{log.name}.{n}")
        if old.exists():
            old.rename(log.with_name(f"{log.name}.{n + 1}"))
    log.rename(log.with_name(f"{log.name}.1"))


def age(*paths: Path) -> None:
    """Make rotated files older than the quiet time, oldest first as written."""
    for i, path in enumerate(paths):
        stamp = time.time() - ROTATED_QUIET_S - 100 + i
        os.utime(path, (stamp, stamp))


@pytest.mark.parametrize("restart", [False, True], ids=["running", "restarted"])
def test_tail_rename_rotation_several_generations_behind(tmp_path: Path, restart: bool) -> None:
    log = tmp_path / "logs" / "app.log"
    write(log, lines(1, 3))
    tailer, registry = make_tailer(tmp_path, max_bytes=len(line(1)) * 2)
    assert collect_all(tailer) == [1, 2, 3]
    write(log, lines(4, 6))
    for first in (7, 10, 13):  # three more rotations before the tailer looks again
        rotate(log)
        write(log, lines(first, first + 2))
    if restart:
        tailer, registry = make_tailer(tmp_path, max_bytes=len(line(1)) * 2)
    assert collect_all(tailer) == list(range(4, 16))
    write(log, line(16))
    assert collect_all(tailer) == [16]
    assert registry.get_sample_value("vigil_collector_lost_bytes_total", {"file": str(log)}) is None


def test_tail_copytruncate_detected_by_head_even_when_regrown(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "app.log"
    write(log, lines(1, 2))
    tailer, _ = make_tailer(tmp_path)
    assert collect_all(tailer) == [1, 2]
    write(log, lines(3, 4))
    copy = log.with_name("app.log.1")
    copy.write_bytes(log.read_bytes())
    write(log, lines(5, 9), mode="wb")  # truncated, then more written than the old offset
    assert log.stat().st_size > len(lines(1, 4))
    assert collect_all(tailer) == list(range(3, 10))


def test_tail_reads_gzip_compressed_generations(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "app.log"
    write(log, lines(1, 2))
    tailer, _ = make_tailer(tmp_path, max_bytes=len(line(1)) * 3)
    assert collect_all(tailer) == [1, 2]
    write(log, lines(3, 8))
    rotate(log)
    write(log, lines(9, 10))
    rotate(log)
    write(log, lines(11, 12))
    # delaycompress: the older generation (.2, the one being read) is compressed
    old = log.with_name("app.log.2")
    with gzip.open(log.with_name("app.log.2.gz"), "wb") as gz:
        gz.write(old.read_bytes())
    old.unlink()
    age(log.with_name("app.log.2.gz"), log.with_name("app.log.1"))
    assert collect_all(tailer) == list(range(3, 13))


def test_tail_compressed_generation_between_reads(tmp_path: Path) -> None:
    """The file being read is compressed while the tailer is halfway through it."""
    log = tmp_path / "logs" / "app.log"
    write(log, lines(1, 6))
    rotated = log.with_name("app.log.1")
    tailer, _ = make_tailer(tmp_path, max_bytes=len(line(1)) * 2)
    events = events_of(tailer.collect())
    assert [e.doc["n"] for e in events] == [1, 2]
    rotate(log)
    write(log, line(7))
    with gzip.open(log.with_name("app.log.1.gz"), "wb") as gz:
        gz.write(rotated.read_bytes())
    rotated.unlink()
    age(log.with_name("app.log.1.gz"))
    assert collect_all(tailer) == list(range(3, 8))


def test_tail_deleted_generation_counts_lost_bytes_and_names_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "logs" / "app.log"
    write(log, lines(1, 5))
    tailer, registry = make_tailer(tmp_path, max_bytes=len(line(1)) * 2)
    assert [e.doc["n"] for e in events_of(tailer.collect())] == [1, 2]
    rotate(log)
    write(log, lines(6, 7))
    rotate(log)
    write(log, line(8))
    log.with_name("app.log.2").unlink()  # 3, 4, 5 were never read
    assert collect_all(tailer) == [6, 7, 8]
    lost = registry.get_sample_value("vigil_collector_lost_bytes_total", {"file": str(log)})
    assert lost == len(lines(3, 5))
    assert any(r.levelname == "ERROR" and str(log) in r.getMessage() for r in caplog.records)


def test_tail_lag_and_behind(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "app.log"
    write(log, lines(1, 4))
    tailer, registry = make_tailer(tmp_path, max_bytes=len(line(1)) * 2)
    assert not tailer.behind()
    events_of(tailer.collect())
    assert tailer.behind()
    lag = registry.get_sample_value("vigil_collector_lag_bytes", {"file": str(log)})
    assert lag == len(lines(3, 4))
    events_of(tailer.collect())
    assert not tailer.behind()
    assert registry.get_sample_value("vigil_collector_lag_bytes", {"file": str(log)}) == 0
    write(log, b'{"partial": ')  # nothing the next collect could read
    assert tailer.collect() == []
    assert not tailer.behind()


def test_tail_version_1_checkpoint_keeps_ids(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "app.log"
    write(log, lines(1, 2))
    tailer, _ = make_tailer(tmp_path)
    first = events_of(tailer.collect(), commit=False)
    write(log, line(3))
    v1 = {
        "version": 1,
        "files": {str(log.resolve()): {"inode": log.stat().st_ino, "generation": 0, "offset": 0}},
    }
    (tmp_path / CHECKPOINT_FILE).write_text(json.dumps(v1))
    migrated, _ = make_tailer(tmp_path)
    again = events_of(migrated.collect())
    assert [e.id for e in again[:2]] == [e.id for e in first]
    assert json.loads((tmp_path / CHECKPOINT_FILE).read_text())["version"] == 2


def test_tail_copytruncate_without_copy_counts_what_it_overwrote(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "app.log"
    write(log, lines(1, 4))
    tailer, registry = make_tailer(tmp_path, max_bytes=len(line(1)) * 2)
    assert [e.doc["n"] for e in events_of(tailer.collect())] == [1, 2]  # 3 and 4 seen, unread
    write(log, lines(5, 9), mode="wb")  # truncated in place, no copy kept
    assert collect_all(tailer) == list(range(5, 10))
    lost = registry.get_sample_value("vigil_collector_lost_bytes_total", {"file": str(log)})
    assert lost == len(lines(3, 4))


def test_tail_lag_counts_unread_generations(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "app.log"
    write(log, lines(1, 2))
    tailer, registry = make_tailer(tmp_path, max_bytes=len(line(1)))
    events_of(tailer.collect())
    write(log, lines(3, 4))
    rotate(log)
    write(log, lines(5, 7))
    events_of(tailer.collect())  # line 2, still in the first file
    events_of(tailer.collect())  # line 3, now in app.log.1
    lag = registry.get_sample_value("vigil_collector_lag_bytes", {"file": str(log)})
    assert lag == len(line(4) + lines(5, 7))
    assert tailer.behind()


def test_tail_numbered_generations_with_a_gap_wait_for_the_renumbering(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "app.log"
    write(log, line(1))
    tailer, _ = make_tailer(tmp_path)
    assert collect_all(tailer) == [1]
    write(log, line(2))
    rotate(log)
    write(log, line(3))
    # Caught in the middle of the next rotation: app.log.1 → app.log.2 is done,
    # app.log → app.log.1 not yet. Going on now could only skip a generation.
    log.with_name("app.log.1").rename(log.with_name("app.log.2"))
    assert collect_all(tailer) == []
    log.rename(log.with_name("app.log.1"))
    write(log, line(4))
    assert collect_all(tailer) == [2, 3, 4]


def test_tail_compressed_twin_of_the_file_being_read_is_not_read_again(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "app.log"
    write(log, lines(1, 4))
    tailer, _ = make_tailer(tmp_path, max_bytes=len(line(1)) * 2)
    assert [e.doc["n"] for e in events_of(tailer.collect())] == [1, 2]
    rotate(log)
    write(log, line(5))
    rotated = log.with_name("app.log.1")
    with gzip.open(log.with_name("app.log.1.gz"), "wb") as gz:  # compression under way
        gz.write(rotated.read_bytes())
    age(rotated, log.with_name("app.log.1.gz"))
    assert collect_all(tailer) == [3, 4, 5]


def test_tail_copytruncate_of_a_file_that_was_empty_when_last_seen(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "app.log"
    write(log, lines(1, 2))
    tailer, _ = make_tailer(tmp_path)
    assert collect_all(tailer) == [1, 2]
    copy = log.with_name("app.log.1")
    copy.write_bytes(log.read_bytes())
    os.truncate(log, 0)
    assert collect_all(tailer) == []  # now on the empty live file: nothing to know it by
    write(log, lines(3, 4))
    copy.rename(log.with_name("app.log.2"))
    copy.write_bytes(log.read_bytes())
    later = log.stat().st_mtime + 1  # the copy is younger than the file it was taken from
    os.utime(copy, (later, later))
    os.truncate(log, 0)
    write(log, line(5))
    restarted, _ = make_tailer(tmp_path)
    assert collect_all(restarted) == [3, 4, 5]


def test_tail_copy_not_yet_truncated_is_waited_for(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "app.log"
    write(log, lines(1, 2))
    tailer, _ = make_tailer(tmp_path)
    assert collect_all(tailer) == [1, 2]
    write(log, line(3))
    copy = log.with_name("app.log.1")
    copy.write_bytes(log.read_bytes())
    os.truncate(log, 0)
    write(log, lines(4, 5))
    copy.rename(log.with_name("app.log.2"))
    copy.write_bytes(log.read_bytes())  # copied; logrotate truncates next
    assert collect_all(tailer) == [3]
    os.truncate(log, 0)
    write(log, line(6))
    assert collect_all(tailer) == [4, 5, 6]
