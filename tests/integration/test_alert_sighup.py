"""``kill -HUP`` (systemd's ``ExecReload``) makes ``vigil alert`` read its rule and
Alertmanager files again, as Prometheus and Alertmanager do, even when an edit kept the
file's mtime (a restored backup, ``cp -p``); a bad file keeps the last good version and
says so in a metric and the log, and the process keeps running. About 15 s (the start
imports the stack)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from alert_process import metric, start_alert, stop_alert
from conftest import free_port, wait_until

from vigil.logging import log_file

RULES = "groups:\n  - name: g\n    rules:\n      - alert: Down\n        expr: up == 0\n"
AM = """\
route:
  receiver: team
  group_wait: 30s
receivers:
  - name: team
"""


def rewrite(path: Path, text: str) -> None:
    """New content, the old mtime: only a signal can tell the process to look."""
    before = path.stat()
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def log_lines(data: Path) -> list[str]:
    """The ``message`` of each line of the process's ECS JSON log file."""
    text = log_file(data, "alert").read_text(encoding="utf-8")
    return [str(json.loads(line)["message"]) for line in text.splitlines()]


def test_alert_sighup_reloads_unchanged_mtimes_and_a_bad_file_keeps_the_last_good(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    rules, am = tmp_path / "rules.yaml", tmp_path / "am.yaml"
    rules.write_text(RULES, encoding="utf-8")
    am.write_text(AM, encoding="utf-8")
    config = tmp_path / "vigil.yaml"
    config.write_text(
        f"data_dir: {data}\nstore: {{backend: memory}}\n"
        f"alert:\n  rules: ['{rules}']\n  interval_s: 1\n  alertmanager_config: {am}\n",
        encoding="utf-8",
    )
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    env["VIGIL_ALERT_PORT"] = str(port)

    def value(name: str) -> float:
        return metric(port, name + " ")

    proc: subprocess.Popen[bytes] = start_alert(config, env)
    try:
        ok = "alertmanager_config_last_reload_successful"
        wait_until("the process to serve /metrics", lambda: value(ok) == 1, 30)

        rewrite(am, AM.replace("30s", "soon"))
        rewrite(rules, RULES.replace("up == 0", "up =="))
        proc.send_signal(signal.SIGHUP)
        wait_until("the refused Alertmanager reload", lambda: value(ok) == 0, 10)
        failures = "vigil_alert_rule_reload_failures_total"
        wait_until("the refused rule reload", lambda: value(failures) == 1, 10)
        assert value("vigil_alert_rules_last_reload_successful") == 0
        assert proc.poll() is None  # still running, on the last good files
        logged = "\n".join(log_lines(data))
        assert f"{am}:3:15: group_wait: bad duration 'soon'" in logged
        assert f"{rules}:5:" in logged and "keeping the last good rules" in logged

        rewrite(am, AM.replace("30s", "10s"))
        proc.send_signal(signal.SIGHUP)
        wait_until("the good Alertmanager file again", lambda: value(ok) == 1, 10)
        assert "alertmanager config reloaded from " + str(am) in "\n".join(log_lines(data))
        stop_alert(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
