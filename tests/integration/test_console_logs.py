"""Vigil's processes on a pseudo-terminal: human lines on screen, ECS JSON in the file."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from conftest import free_port

REPO = Path(__file__).resolve().parents[2]
HUMAN = re.compile(r"^\d\d:\d\d:\d\d INFO  alert    alerting: \d+ rules in \d+ groups$")


def run_on_pty(argv: list[str], env: dict[str, str], timeout: float = 60) -> tuple[int, str]:
    """Run ``argv`` with stdin/stdout/stderr on a pseudo-terminal; its exit code and output."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=REPO)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        return proc.wait(timeout=max(1.0, deadline - time.monotonic())), b"".join(chunks).decode(
            "utf-8", "replace"
        )
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()


def test_console_logs_human_on_terminal_json_in_file(tmp_path: Path) -> None:
    env = {
        k: v for k, v in os.environ.items() if k not in ("VIGIL_LOG_FORMAT", "VIGIL_SLACK_TOKEN")
    }
    env["VIGIL_DATA_DIR"] = str(tmp_path / "data")
    code, output = run_on_pty([sys.executable, "-m", "vigil.cli", "alert", "--once"], env)
    assert code == 0, output
    lines = [x for x in output.replace("\r\n", "\n").splitlines() if x.strip()]
    assert any(HUMAN.match(x) for x in lines), lines
    assert not any(x.lstrip().startswith("{") for x in lines), lines
    logged = tmp_path / "data" / "logs" / "vigil" / "alert.json"
    docs = [json.loads(x) for x in logged.read_text(encoding="utf-8").splitlines()]
    started = [d for d in docs if d["message"].startswith("alerting: ")]
    assert started and started[0]["log.level"] == "info"
    assert started[0]["service"]["name"] == "vigil-alert"
    assert "@timestamp" in started[0] and "ecs.version" in started[0]


def test_console_logs_json_when_asked_on_terminal(tmp_path: Path) -> None:
    env = dict(os.environ, VIGIL_DATA_DIR=str(tmp_path / "data"))
    env.pop("VIGIL_SLACK_TOKEN", None)
    argv = [sys.executable, "-m", "vigil.cli", "--log-format", "json", "alert", "--once"]
    code, output = run_on_pty(argv, env)
    assert code == 0, output
    lines = [x for x in output.replace("\r\n", "\n").splitlines() if x.strip()]
    assert lines and all(json.loads(x)["ecs.version"] for x in lines), lines


def test_console_logs_web_keeps_access_lines_off_the_terminal(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "VIGIL_LOG_FORMAT"}
    env["VIGIL_DATA_DIR"] = str(tmp_path / "data")
    port = free_port()
    master, slave = pty.openpty()
    argv = [sys.executable, "-m", "vigil.cli", "web", "--port", str(port)]
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=REPO)
    os.close(slave)
    output = b""
    try:
        deadline = time.monotonic() + 30
        while b"web UI listening" not in output and time.monotonic() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                output += os.read(master, 4096)
        assert b"web UI listening" in output, output
        for _ in range(3):  # what the overview and the scraper do all day
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                assert r.status == 200
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        while select.select([master], [], [], 0.5)[0]:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = output.decode("utf-8", "replace")
    assert re.search(r"^\d\d:\d\d:\d\d INFO  web      web UI listening", text, re.M), text
    assert "/metrics" not in text
    logged = (tmp_path / "data" / "logs" / "vigil" / "web.json").read_text(encoding="utf-8")
    access = [json.loads(x) for x in logged.splitlines() if '"/metrics"' in x]
    assert len(access) == 3  # kept in the file
