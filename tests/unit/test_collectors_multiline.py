"""Multiline events in the tailer: grouping, waiting at the end, bounds, ids, tracebacks."""

from __future__ import annotations

import os
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from collectors import multiline
from collectors.checkpoints import CHECKPOINT_FILE, Checkpoints
from collectors.metrics import CollectorMetrics
from collectors.multiline import Grouped, Rule
from collectors.parsers import PARSERS
from collectors.tail import ROTATED_QUIET_S, Tailer
from siem.model import Event, event_id

FILES = Path(__file__).resolve().parent.parent / "files"
GUNICORN = FILES / "gunicorn-error.log"
PG = b"2026-11-29 23:50:01.123 UTC [41] alice@shop "


def make_tailer(
    data_dir: Path, parser: str = "postgresql_stderr", max_bytes: int = 1 << 20
) -> Tailer:
    return Tailer(
        data_dir,
        [],
        Checkpoints(data_dir / CHECKPOINT_FILE),
        CollectorMetrics(CollectorRegistry()),
        parsers={"app.log": PARSERS[parser]},
        max_bytes=max_bytes,
        clock=lambda: 1e9,
    )


def collect(tailer: Tailer) -> list[Event]:
    batches = tailer.collect()
    for batch in batches:
        if batch.on_written is not None:
            batch.on_written()
    return [e for b in batches for e in b.events]


def quiet(path: Path) -> None:
    """Make ``path`` look unwritten for longer than ``ROTATED_QUIET_S``."""
    then = time.time() - ROTATED_QUIET_S - 1
    os.utime(path, (then, then))


ERROR = PG + b'ERROR:  relation "nope" does not exist at character 15\n'
STATEMENT = PG + b"STATEMENT:  SELECT *\n\t  FROM nope\n\t WHERE id = 1\n"
NEXT = PG + b"LOG:  duration: 0.120 ms  statement: SELECT 1\n"


def test_multiline_group_waits_for_its_next_line_and_keeps_its_first_lines_id(
    tmp_path: Path,
) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(ERROR + STATEMENT)
    tailer = make_tailer(tmp_path)
    assert collect(tailer) == []  # the STATEMENT may not be the last line of the message
    assert Checkpoints(tmp_path / CHECKPOINT_FILE).get(str(log)) is None
    with log.open("ab") as fh:
        fh.write(NEXT)
    (error,) = collect(tailer)
    assert error.id == event_id(str(log), 0)  # the position of its first line
    assert error.doc["postgresql"]["log"]["query"] == "SELECT *\n  FROM nope\n WHERE id = 1"
    assert error.doc["message"] == 'relation "nope" does not exist at character 15'
    # The checkpoint stops before the group still open (the duration line).
    pos = Checkpoints(tmp_path / CHECKPOINT_FILE).get(str(log))
    assert pos is not None and pos.offset == len(ERROR + STATEMENT)
    # A restart reads the open group again; a re-read group keeps its id.
    quiet(log)
    (duration,) = collect(make_tailer(tmp_path))
    assert duration.id == event_id(str(log), len(ERROR + STATEMENT))
    assert duration.doc["postgresql"]["log"]["query"] == "SELECT 1"
    (tmp_path / CHECKPOINT_FILE).unlink()
    again = collect(make_tailer(tmp_path))
    assert [e.id for e in again] == [error.id, duration.id]


def test_multiline_group_at_the_end_of_a_quiet_file_is_emitted(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(ERROR + STATEMENT)
    tailer = make_tailer(tmp_path)
    assert collect(tailer) == []
    quiet(log)
    (error,) = collect(tailer)
    assert error.doc["postgresql"]["log"]["query"].endswith("WHERE id = 1")
    pos = Checkpoints(tmp_path / CHECKPOINT_FILE).get(str(log))
    assert pos is not None and pos.offset == log.stat().st_size


def test_multiline_detail_of_another_process_is_its_own_event(tmp_path: Path) -> None:
    other = b"2026-11-29 23:50:01.123 UTC [42] bob@shop DETAIL:  not alice's\n"
    log = tmp_path / "app.log"
    log.write_bytes(ERROR + other)
    quiet(log)
    first, stray = collect(make_tailer(tmp_path))
    assert "detail" not in first.doc["postgresql"]["log"]
    assert stray.dataset == "vigil.collector.error"  # a DETAIL alone is no message


def test_multiline_groups_are_bounded_and_nothing_is_dropped() -> None:
    rule = Rule(lambda lines, line: line.startswith(b" "), max_lines=3, max_bytes=1000)
    lines = [(i * 10, b"head" if i == 0 else b" more") for i in range(8)]
    groups, held = multiline.split(lines, rule, max_bytes=1 << 20, complete=True)
    assert [len(g.lines) for g in groups] == [3, 3, 2]
    assert [g.start for g in groups] == [0, 30, 60]
    assert held is None
    by_bytes = Rule(rule.continues, max_lines=100, max_bytes=12)
    groups, _ = multiline.split(lines, by_bytes, max_bytes=1 << 20, complete=True)
    assert sum(len(g.lines) for g in groups) == 8
    assert all(len(g.raw) <= 12 for g in groups)
    groups, held = multiline.split(lines, rule, max_bytes=1 << 20, complete=False)
    assert [len(g.lines) for g in groups] == [3, 3] and held == 60
    # Both groups were cut short (the next line continued them); a whole one is not.
    assert [g.cut for g in groups] == [True, True]
    whole, _ = multiline.split(
        [(0, b"head"), (5, b" more"), (11, b"next")], rule, max_bytes=1 << 20, complete=True
    )
    assert [(len(g.lines), g.cut) for g in whole] == [(2, False), (1, False)]


def test_multiline_group_larger_than_a_read_goes_on_in_pieces(tmp_path: Path) -> None:
    continuation = b"\t" + b"x" * 50 + b"\n"
    log = tmp_path / "app.log"
    log.write_bytes(ERROR + PG + b"STATEMENT:  SELECT\n" + continuation * 40)
    quiet(log)
    tailer = make_tailer(tmp_path, max_bytes=512)
    events: list[Event] = []
    for _ in range(40):  # bounded: each read takes at least one whole group
        events += collect(tailer)
        if not tailer.behind():
            break
    pos = Checkpoints(tmp_path / CHECKPOINT_FILE).get(str(log))
    assert pos is not None and pos.offset == log.stat().st_size
    assert events[0].doc["postgresql"]["log"]["query"].startswith("SELECT\nxxx")
    # The rest of the statement is kept as events of its own, not dropped.
    kept = sum(e.doc.get("event", {}).get("original", "").count("x" * 50) for e in events[1:])
    first = events[0].doc["postgresql"]["log"]["query"].count("x" * 50)
    assert first + kept == 40


def test_multiline_cut_is_counted_and_tagged(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    frames = [f'  File "shop/x.py", line {i}, in f' for i in range(12)]
    text = ["Exception on /checkout", "Traceback (most recent call last):", *frames]
    log.write_text("\n".join([*text, "ValueError: boom", "server up"]) + "\n")
    quiet(log)
    python = PARSERS["python"]
    assert isinstance(python, Grouped)

    def read(max_lines: int) -> tuple[list[Event], float | None]:
        registry = CollectorRegistry()
        tailer = Tailer(
            tmp_path,
            [],
            Checkpoints(tmp_path / f"{max_lines}-{CHECKPOINT_FILE}"),
            CollectorMetrics(registry),
            parsers={"app.log": Grouped(python.parse, Rule(python.rule.continues, max_lines))},
            clock=lambda: 1e9,
        )
        events = collect(tailer)
        cuts = registry.get_sample_value("vigil_collector_multiline_cut_total", {"file": str(log)})
        return events, cuts

    whole, cuts = read(multiline.MAX_LINES)
    assert len(whole) == 2 and cuts == 0
    assert "tags" not in whole[0].doc
    # Bounded at 5 lines, the traceback is cut after its third frame.
    events, cuts = read(5)
    assert cuts == 1
    first, *rest = events
    assert first.doc["tags"] == [multiline.CUT_TAG]
    assert first.doc["error"]["stack_trace"] == "\n".join(text[1:5])
    assert [e for e in rest if "tags" in e.doc] == []
    # Nothing is dropped: the other frames follow as events of their own.
    assert [e.doc["message"] for e in rest] == [*frames[3:], "ValueError: boom", "server up"]


def test_multiline_python_traceback_of_real_gunicorn_output_is_one_event(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(GUNICORN.read_bytes())
    quiet(log)
    events = collect(make_tailer(tmp_path, parser="python"))
    crashes = [e for e in events if "error" in e.doc]
    assert crashes, "no traceback found"
    crash = crashes[0].doc
    assert crash["message"] == "Exception in worker process"
    assert crash["log"]["level"] == "error"
    assert crash["error"]["type"] == "ModuleNotFoundError"
    assert crash["error"]["message"] == "No module named 'no_such_shop'"
    trace = crash["error"]["stack_trace"]
    assert trace.startswith("Traceback (most recent call last):")
    assert 'File "' in trace and trace.endswith("No module named 'no_such_shop'")
    # Every line is in one event: the traceback's in the crash, the others one each.
    lines = GUNICORN.read_text().splitlines()
    start = lines.index("Traceback (most recent call last):")
    end = next(i for i, x in enumerate(lines) if x.startswith("ModuleNotFoundError"))
    assert trace == "\n".join(lines[start : end + 1])
    assert len(events) == len(lines) - (end + 1 - start)
    assert all(e.dataset == "python.log" for e in events)


def test_multiline_python_traceback_chained_and_json_lines_apart() -> None:
    lines = [
        b'{"@timestamp":"2026-11-29T23:50:00Z","message":"ok","log.level":"info"}',
        b"Traceback (most recent call last):",
        b'  File "/srv/shop/app.py", line 3, in pay',
        b"    raise KeyError(key)",
        b"KeyError: 'card'",
        b"During handling of the above exception, another exception occurred:",
        b"Traceback (most recent call last):",
        b'  File "/srv/shop/app.py", line 5, in pay',
        b'    raise ValueError("bad card")',
        b"ValueError: bad card",
        b'{"@timestamp":"2026-11-29T23:50:01Z","message":"next","log.level":"info"}',
    ]
    parser = PARSERS["python"]
    assert isinstance(parser, Grouped)
    groups, held = multiline.split(
        list(enumerate(lines)), parser.rule, max_bytes=1 << 20, complete=True
    )
    assert [len(g.lines) for g in groups] == [1, 9, 1]
    assert held is None
    crash = parser(groups[1].raw, source="f", position=1, offset=1, now=1e9).doc
    assert crash["error"]["type"] == "ValueError"
    assert crash["error"]["message"] == "bad card"
    assert "KeyError: 'card'" in crash["error"]["stack_trace"]
    assert crash["message"] == "ValueError: bad card"
    ok = parser(groups[0].raw, source="f", position=0, offset=0, now=1e9)
    assert ok.doc["message"] == "ok"


def test_multiline_group_open_at_a_rotation_is_read_whole_from_the_rotated_file(
    tmp_path: Path,
) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(ERROR + STATEMENT)
    tailer = make_tailer(tmp_path)
    assert collect(tailer) == []
    log.rename(tmp_path / "app.log.1")
    log.write_bytes(NEXT)
    events: list[Event] = []
    for _ in range(5):  # moving to the next generation takes a pass or two
        events += collect(tailer)
    assert events == []  # the rotated file may still be written to: its group waits
    quiet(tmp_path / "app.log.1")
    quiet(log)
    for _ in range(5):
        events += collect(tailer)
    assert [e.doc["postgresql"]["log"]["query"] for e in events] == [
        "SELECT *\n  FROM nope\n WHERE id = 1",
        "SELECT 1",
    ]
    assert events[0].id == event_id(str(log), 0)
