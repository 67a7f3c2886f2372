"""``POST /-/reload`` on the alert app: ``admin`` only (docs/security.md), Alertmanager's
answers (200 empty, 500 ``failed to reload config: …``), a ``config-reload`` audit event
with the outcome; without the engine it reads the Alertmanager file alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from alerting.am.api import create_app
from alerting.am.config import load_config
from alerting.am.dispatch import AlertManager
from vigil.auth import UserStore

AM = "route:\n  receiver: team\n  group_wait: 30s\nreceivers:\n  - name: team\n"


def test_reload_route_is_admin_only_and_answers_as_alertmanager(tmp_path: Path) -> None:
    path = tmp_path / "am.yml"
    path.write_text(AM)
    registry = CollectorRegistry()
    manager = AlertManager(
        load_config(path),
        tmp_path / "alerts.db",
        {},
        registry=registry,
        config_path=path,
        build_integrations=lambda c: {},
    )
    users = UserStore(tmp_path / "users.db")
    tokens = {r: users.create_token(f"{r}-bot", r)[1] for r in ("viewer", "operator", "admin")}
    audit: list[Any] = []
    client = create_app(manager, users, registry=CollectorRegistry(), audit=audit.append)
    client = client.test_client()

    def reload(role: str | None) -> Any:
        headers = {"Authorization": f"Bearer {tokens[role]}"} if role else {}
        return client.post("/-/reload", headers=headers)

    try:
        assert reload(None).status_code == 401
        assert reload("viewer").status_code == 403
        assert reload("operator").status_code == 403
        assert audit == []

        path.write_text(AM.replace("30s", "soon"))  # same second: only a forced reload sees it
        rv = reload("admin")
        assert rv.status_code == 500
        assert rv.text.startswith(f"failed to reload config: {path}:3:")
        assert "group_wait: bad duration 'soon'" in rv.text
        assert registry.get_sample_value("alertmanager_config_last_reload_successful") == 0
        assert manager.config.route.group_wait_s == 30

        path.write_text(AM.replace("30s", "10s"))
        rv = reload("admin")
        assert (rv.status_code, rv.text) == (200, "")
        assert manager.config.route.group_wait_s == 10
        assert registry.get_sample_value("alertmanager_config_last_reload_successful") == 1
        outcomes = [(e.doc["event"]["action"], e.doc["event"]["outcome"]) for e in audit]
        assert outcomes == [("config-reload", "failure"), ("config-reload", "success")]
        assert audit[1].doc["user"]["name"] == "admin-bot"
    finally:
        manager.close()
