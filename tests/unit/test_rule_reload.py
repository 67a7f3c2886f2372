"""A bad rule file never stops ``vigil alert``: reload keeps the last good rules.

Through ``AlertEngine.reload_if_changed`` (what the evaluation loop calls): the
refused reload is logged with file:line:col, counted in
``vigil_alert_rule_reload_failures_total``, the old rules keep being
evaluated, and the fixed file is picked up. At startup, bad rules stop
``vigil alert`` with the located error and exit code 2, without a traceback.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from alerting.engine import AlertEngine, RuleSource
from alerting.state import AlertBook, AlertDB
from siem.memory import MemoryStore
from siem.model import Sample, make_labels
from vigil.cli import main

T0 = 1_700_000_000.0
GOOD = b"groups:\n  - name: g\n    rules:\n      - alert: Down\n        expr: up == 0\n"
FIXED = b"groups:\n  - name: g\n    rules:\n      - alert: StillDown\n        expr: up == 0\n"
BOMB = b"a: &a [x, x, x, x, x, x, x, x, x, x]\n" + b"".join(
    b"%c: &%c [%s]\n" % (b, b, b", ".join([b"*%c" % a] * 10))
    for a, b in zip(b"abcdef", b"bcdefg", strict=True)
)
BAD = {
    "non-utf8": (GOOD.replace(b"up == 0", b"up == 0 \xff"), ":5:", "not UTF-8"),
    "alias-bomb": (BOMB + b"groups: *g\n", ":6:", "aliases are expanded"),
    "deep": (b"groups: " + b"[" * 10_000, ":1:", "open at once"),
    "bad-tag": (GOOD.replace(b"alert: Down", b"alert: !!int Down"), ":4:", "bad value"),
    "kql-surrogate": (
        b"groups:\n  - name: g\n    rules:\n      - alert: Login\n"
        b'        event: {query: "user.name:\\ud800", group_by: source.ip, window: 5m,'
        b" threshold: 1}\n",
        ":5:",
        "not valid KQL",
    ),
}


def _touch(path: Path, data: bytes, step: int) -> None:
    path.write_bytes(data)
    os.utime(path, (T0 + step, T0 + step))  # a distinct mtime even within one clock tick


@pytest.mark.parametrize("case", sorted(BAD))
def test_rule_reload_bad_file_keeps_last_good_rules_and_is_counted(
    tmp_path: Path, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    data, where, message = BAD[case]
    path = tmp_path / "rules" / "a.yaml"
    path.parent.mkdir()
    _touch(path, GOOD, 0)
    store = MemoryStore()
    store.write(samples=[Sample(make_labels("up", job="shop", instance="a:1"), T0, 0.0)])
    source = RuleSource([str(tmp_path / "rules" / "*.yaml")])
    registry = CollectorRegistry()
    engine = AlertEngine(
        store,
        source.load(),
        AlertBook(AlertDB(tmp_path / "alerts.db")),
        [],
        registry=registry,
        source=source,
    )
    assert [c.alert.name for c in engine.run_once(T0)] == ["Down"]

    _touch(path, data, 1)
    with caplog.at_level(logging.ERROR, logger="alerting.engine"):
        assert engine.reload_if_changed() is False
    assert registry.get_sample_value("vigil_alert_rule_reload_failures_total") == 1
    assert f"{path}{where}" in caplog.text and message in caplog.text
    # The last good rule still runs: its alert is still there and the group evaluated again.
    engine.run_once(T0 + 5)
    assert [a.name for a in engine.book.alerts()] == ["Down"]
    assert registry.get_sample_value("vigil_alert_group_evaluations_total", {"group": "g"}) == 2
    assert engine.reload_if_changed() is False  # unchanged bad file: not re-read, not re-counted
    assert registry.get_sample_value("vigil_alert_rule_reload_failures_total") == 1

    _touch(path, FIXED, 2)
    assert engine.reload_if_changed() is True
    assert [r.name for g in engine.groups for r in g.rules] == ["StillDown"]
    assert [c.alert.name for c in engine.run_once(T0 + 10)] == ["StillDown"]


@pytest.mark.parametrize("case", sorted(BAD))
def test_rule_reload_vigil_alert_refuses_to_start_with_a_located_error(
    tmp_path: Path,
    case: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [n for n in os.environ if n.startswith("VIGIL_")]:
        monkeypatch.delenv(name)
    data, where, message = BAD[case]
    rules = tmp_path / "bad.yaml"
    rules.write_bytes(data)
    config = tmp_path / "vigil.yaml"
    config.write_text(f"data_dir: {tmp_path / 'data'}\nalert:\n  rules: ['{rules}']\n")
    assert main(["--config", str(config), "alert", "--once"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"vigil: error: {rules}{where}") and message in err
    assert "Traceback" not in err


class _BrokenSource(RuleSource):
    """A rule source whose files cannot even be listed (e.g. the directory vanished)."""

    def changed(self) -> bool:
        raise OSError("rules directory is gone")


def test_rule_reload_error_of_any_kind_keeps_the_loop_evaluating(tmp_path: Path) -> None:
    store = MemoryStore()
    store.write(samples=[Sample(make_labels("up", job="shop", instance="a:1"), T0, 0.0)])
    path = tmp_path / "a.yaml"
    _touch(path, GOOD, 0)
    source = _BrokenSource([str(path)])
    registry = CollectorRegistry()
    engine = AlertEngine(
        store,
        RuleSource([str(path)]).load(),
        AlertBook(AlertDB(tmp_path / "alerts.db")),
        [],
        registry=registry,
        source=source,
    )
    stop = threading.Event()
    loop = threading.Thread(target=engine.run, args=(stop,))
    loop.start()
    try:
        for _ in range(200):
            evaluated = registry.get_sample_value(
                "vigil_alert_group_evaluations_total", {"group": "g"}
            )
            if evaluated:
                break
            stop.wait(0.05)
        assert evaluated, "the group was never evaluated"
        # The reload right after that pass raised; the loop must have survived it.
        loop.join(0.5)
        assert loop.is_alive(), "the evaluation loop died on a failing reload"
    finally:
        stop.set()
        loop.join(10)
