"""A running ``vigil alert`` says in its metrics whether its last rule reload worked
(``vigil_alert_rules_last_reload_successful``, as Prometheus'
``prometheus_config_last_reload_successful``), for an edit it notices itself and for
``POST /-/reload``, which answers as Alertmanager's: 200, or 500 with the error. About
15 s (the start imports the stack)."""

from __future__ import annotations

import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from alert_process import metric, start_alert, stop_alert
from conftest import free_port, wait_until

from vigil.auth import UserStore

RULES = "groups:\n  - name: g\n    rules:\n      - alert: Down\n        expr: up == 0\n"
AM = "route:\n  receiver: team\n  group_wait: 30s\nreceivers:\n  - name: team\n"


def post_reload(port: int, token: str) -> tuple[int, str]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/-/reload",
        method="POST",
        headers={"Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=40) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def edit(path: Path, text: str, mtime: int) -> None:
    """New content and a new mtime: the file-change path notices it."""
    path.write_text(text, encoding="utf-8")
    os.utime(path, (mtime, mtime))


def test_rule_reload_gauge_follows_bad_and_good_edits_and_post_reload(tmp_path: Path) -> None:
    data = tmp_path / "data"
    rules, am = tmp_path / "rules.yaml", tmp_path / "am.yaml"
    edit(rules, RULES, 1_000_000)
    am.write_text(AM, encoding="utf-8")
    config = tmp_path / "vigil.yaml"
    config.write_text(
        f"data_dir: {data}\nstore: {{backend: memory}}\n"
        f"alert:\n  rules: ['{rules}']\n  interval_s: 1\n  alertmanager_config: {am}\n",
        encoding="utf-8",
    )
    users = UserStore(data / "users.db")
    admin = users.create_token("ops-admin", "admin")[1]
    operator = users.create_token("prometheus", "operator")[1]
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    env["VIGIL_ALERT_PORT"] = str(port)
    ok, at = (
        "vigil_alert_rules_last_reload_successful ",
        "vigil_alert_rules_last_reload_success_timestamp_seconds ",
    )

    proc: subprocess.Popen[bytes] = start_alert(config, env)
    try:
        wait_until("the process to serve /metrics", lambda: metric(port, ok) == 1, 30)
        started = metric(port, at)
        assert started > 1e9
        assert metric(port, "alertmanager_config_last_reload_success_timestamp_seconds ") > 1e9

        edit(rules, RULES.replace("up == 0", "up =="), 2_000_000)
        wait_until("the refused edit", lambda: metric(port, ok) == 0, 10)
        assert metric(port, at) == started  # the last good load's time stays

        assert post_reload(port, operator)[0] == 403  # Prometheus' token cannot reload
        status, body = post_reload(port, admin)
        assert status == 500
        assert body.startswith("failed to reload config: ")
        assert f"{rules}:5:" in body
        assert metric(port, ok) == 0

        edit(rules, RULES.replace("up == 0", "up == 1"), 3_000_000)
        wait_until("the good edit", lambda: metric(port, ok) == 1, 10)
        assert metric(port, at) > started

        am.write_text(AM.replace("30s", "soon"), encoding="utf-8")
        status, body = post_reload(port, admin)  # without waiting for the mtime check
        assert status == 500 and "group_wait: bad duration 'soon'" in body
        assert metric(port, "alertmanager_config_last_reload_successful ") == 0
        am.write_text(AM, encoding="utf-8")
        assert post_reload(port, admin) == (200, "")
        assert metric(port, "alertmanager_config_last_reload_successful ") == 1
        assert metric(port, ok) == 1
        stop_alert(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_without_alertmanager_config_the_port_still_serves_health_and_reload(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    config = tmp_path / "vigil.yaml"
    config.write_text(
        f"data_dir: {data}\nstore: {{backend: memory}}\n"
        f"alert:\n  rules: ['{rules}']\n  interval_s: 1\n",
        encoding="utf-8",
    )
    users = UserStore(data / "users.db")
    admin = users.create_token("ops-admin", "admin")[1]
    operator = users.create_token("ops", "operator")[1]
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    env["VIGIL_ALERT_PORT"] = str(port)
    ok = "vigil_alert_rules_last_reload_successful "

    proc: subprocess.Popen[bytes] = start_alert(config, env)
    try:
        wait_until("the process to serve /metrics", lambda: metric(port, ok) == 1, 30)
        for path in ("/-/healthy", "/-/ready"):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                assert (r.status, r.read()) == (200, b"OK")
        assert post_reload(port, "")[0] == 401
        assert post_reload(port, operator)[0] == 403

        rules.write_text(RULES.replace("up == 0", "up =="), encoding="utf-8")
        status, body = post_reload(port, admin)
        assert status == 500 and f"{rules}:5:" in body
        assert metric(port, ok) == 0
        rules.write_text(RULES, encoding="utf-8")
        assert post_reload(port, admin) == (200, "")
        assert metric(port, ok) == 1
        stop_alert(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
