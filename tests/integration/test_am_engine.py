"""The rule engine through the shipped alert manager configuration to a Slack-compatible
server: critical alerts page at once, warnings are grouped into one message that is
edited as alerts join and resolve, and a restart neither repeats nor loses a message."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from slack_server import SlackServer

from alerting.am.dispatch import AlertManager
from alerting.cli import alert_manager
from alerting.engine import AlertEngine
from alerting.rules import load_rules
from alerting.state import AlertBook, AlertDB
from siem.memory import MemoryStore
from siem.model import Sample, make_labels
from vigil.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "xoxb-am"
T0 = 1_700_000_000.0
RULES = """
groups:
  - name: disks
    interval: 5s
    rules:
      - alert: DiskFull
        expr: disk_used_percent > 90
        labels: {severity: warning, team: ops}
        annotations: {summary: "Disk of {{ $labels.instance }} is full"}
      - alert: HostDown
        expr: host_up == 0
        labels: {severity: critical, team: ops}
        annotations: {summary: "{{ $labels.instance }} is down"}
"""


@pytest.fixture
def slack() -> Iterator[SlackServer]:
    with SlackServer(token=TOKEN) as server:
        yield server


def write(store: MemoryStore, name: str, at: float, **values: float) -> None:
    store.write(
        samples=[
            Sample(make_labels(name, instance=instance), at, value)
            for instance, value in values.items()
        ]
    )


class Rig:
    def __init__(self, tmp_path: Path, slack: SlackServer, store: MemoryStore) -> None:
        rules = tmp_path / "rules.yaml"
        rules.write_text(RULES)
        self.groups = load_rules([rules])
        self.settings = load_settings(
            None,
            env={
                "VIGIL_CONFIG": str(ROOT / "config" / "vigil.yaml"),
                "VIGIL_DATA_DIR": str(tmp_path / "data"),
                "VIGIL_SLACK_TOKEN": TOKEN,
                "VIGIL_SLACK_API_URL": slack.api_url,
                "VIGIL_ALERTMANAGER_CONFIG": str(ROOT / "config" / "alertmanager.yaml"),
            },
        )
        self.tmp_path = tmp_path
        self.store = store
        self.engine: AlertEngine | None = None
        self.start()

    def start(self) -> None:
        registry = CollectorRegistry()
        self.manager = alert_manager(self.settings, registry)
        assert isinstance(self.manager, AlertManager)
        self.db = AlertDB(Path(self.settings.data_dir) / "alerts.db")
        self.engine = AlertEngine(
            self.store,
            self.groups,
            AlertBook(self.db),
            [],
            registry=registry,
            manager=self.manager,
        )

    def restart(self) -> None:
        self.manager.close()
        self.db.close()
        self.start()

    def at(self, t: float) -> None:
        assert self.engine is not None
        self.engine.run_once(at=T0 + t)


def messages(slack: SlackServer) -> list[str]:
    return [
        c.payload["text"]
        for c in slack.ok_calls("chat.postMessage")
        if "thread_ts" not in c.payload
    ]


def test_critical_pages_at_once_and_warnings_share_one_updated_message(
    tmp_path: Path, slack: SlackServer
) -> None:
    store = MemoryStore()
    rig = Rig(tmp_path, slack, store)
    write(store, "host_up", T0, a=0, b=1)
    write(store, "disk_used_percent", T0, a=95, b=97, c=10)
    rig.at(0)
    # HostDown fires with no `for` and the critical route has group_wait 0s: paged now
    assert [t for t in messages(slack)] == ["🔴 [FIRING] HostDown: a is down"]
    rig.at(5)
    assert len(messages(slack)) == 1  # warnings wait for group_wait (30s)
    write(store, "host_up", T0 + 30, a=0, b=1)
    write(store, "disk_used_percent", T0 + 30, a=95, b=97, c=10)
    rig.at(30)
    posts = messages(slack)
    assert len(posts) == 2 and posts[1].startswith("🟠 [FIRING:2] DiskFull (team=ops)")
    disk = slack.ok_calls("chat.postMessage")[1]
    sections = [b["text"]["text"] for b in disk.payload["blocks"] if b["type"] == "section"]
    assert sections == [
        "🟠 *Disk of a is full*\ninstance=a, team=ops",
        "🟠 *Disk of b is full*\ninstance=b, team=ops",
    ]

    # b's disk recovers: the same message is edited after group_interval (5m), not re-posted
    for t in (60, 330):
        write(store, "host_up", T0 + t, a=0, b=1)
        write(store, "disk_used_percent", T0 + t, a=95, b=50, c=10)
        rig.at(t)
    updates = slack.ok_calls("chat.update")
    assert len(messages(slack)) == 2
    host_ts, disk_ts = sorted(ts for _, ts in slack.messages)
    assert updates[-1].payload["ts"] == disk_ts

    # restart: nothing is sent twice
    rig.restart()
    write(store, "host_up", T0 + 340, a=0, b=1)
    write(store, "disk_used_percent", T0 + 340, a=95, b=50, c=10)
    rig.at(340)
    assert len(messages(slack)) == 2 and len(slack.ok_calls("chat.update")) == len(updates)

    # everything resolves: the group message turns resolved and its thread says so
    for t in (400, 700):
        write(store, "host_up", T0 + t, a=1, b=1)
        write(store, "disk_used_percent", T0 + t, a=10, b=10, c=10)
        rig.at(t)
    replies = [
        c.payload["text"] for c in slack.ok_calls("chat.postMessage") if "thread_ts" in c.payload
    ]
    assert replies == [
        "✅ [RESOLVED] HostDown (instance=a) resolved.",
        "✅ [RESOLVED] DiskFull (team=ops) resolved.",
    ]
    edits = [(c.payload["ts"], c.payload["text"]) for c in slack.ok_calls("chat.update")]
    assert edits == [
        (disk_ts, "🟠 [FIRING:1] DiskFull (team=ops)"),
        (host_ts, "✅ [RESOLVED] HostDown: a is down"),
        (disk_ts, "✅ [RESOLVED] DiskFull: Disk of a is full"),
    ]
    assert len(messages(slack)) == 2
    rig.manager.close()
    rig.db.close()
